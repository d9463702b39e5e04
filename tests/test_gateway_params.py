"""The gateway's half of parametrized classes, driven by hand as mwtui drives it: a class endpoint's
entry carries the class's parameters; each set of values in a query string gets an entry of its own,
held (and announced with `wake`) until the engine routes replicas to it."""

from __future__ import annotations

import queue
import threading
from typing import Any

import httpx
import pytest

from .fixtures.gateway_harness import TIMEOUT, Gateway, Upstream, endpoint, up

pytestmark = pytest.mark.timeout(60)

PARAMS = [{"name": "name", "type": "str"}, {"name": "n", "type": "int", "default": 1}]


def parent(**kw: Any) -> dict[str, Any]:
    return endpoint(params=PARAMS, **kw)


def variant(upstream: Upstream | None, query: str, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ups = [up(upstream, id="hello~1.0")] if upstream else []
    return endpoint(name=f"hello?{query}", parent="hello", values=values, upstreams=ups, **kw)


def routes(gw: Gateway, *endpoints: dict[str, Any]) -> None:
    """Send a table and wait for the gateway to run on it (its own entries for waiting sets are not
    in the table, so the harness's `routes`, which compares the whole list, cannot tell)."""
    seq = len(gw.events) + 1000
    gw.send({"type": "routes", "seq": seq, "endpoints": list(endpoints)})
    gw.wait_event(lambda e: e == {"type": "routes_applied", "seq": seq})


def in_background(gw: Gateway, path: str) -> queue.Queue[Any]:
    out: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            out.put(gw.get("demo-hello.localhost", path))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out.put(e)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_a_new_set_waits_wakes_the_engine_and_is_served_once_routed(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(parent())
    pending = in_background(gw, "/echo?n=02&name=ann")
    wake = gw.wait_event(lambda e: e["type"] == "wake")
    assert wake == {"type": "wake", "endpoint": "hello?name=ann&n=2", "queued": 1, "parent": "hello",
                    "values": {"name": "ann", "n": 2}}
    assert pending.empty()
    # A table sent meanwhile without the new set keeps the request waiting there.
    routes(gw, parent())
    gw.wait_event(lambda e: e["type"] == "metrics" and e["endpoints"].get("hello?name=ann&n=2", {}).get("queued") == 1)
    routes(gw, parent(), variant(unix_upstream, "name=ann&n=2", {"name": "ann", "n": 2}))
    r = pending.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 200 and r.json()["query"] == "n=02&name=ann"  # forwarded as sent
    # Counted on the set's own entry, not on the parent's.
    metrics = gw.wait_event(lambda e: e["type"] == "metrics"
                            and e["endpoints"].get("hello?name=ann&n=2", {}).get("requests_total") == 1)
    assert metrics["endpoints"]["hello"]["requests_total"] == 0


def test_missing_or_malformed_values_are_400_before_any_replica(gw: Gateway) -> None:
    gw.routes(parent())
    r = gw.get("demo-hello.localhost", "/echo?n=3")
    assert r.status_code == 400
    assert r.text == ("mwtui: hello: missing required class parameter 'name': pass it in the query string, "
                      "e.g. ?name=...\n")
    r = gw.get("demo-hello.localhost", "/echo?name=a&n=lots")
    assert r.status_code == 400 and "class parameter 'n' must be an integer, not 'lots'" in r.text


def test_sets_beyond_max_variants_are_refused_with_retry_after(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(parent(max_variants=1), variant(unix_upstream, "name=a&n=1", {"name": "a", "n": 1}))
    assert gw.get("demo-hello.localhost", "/echo?name=a").status_code == 200
    r = gw.get("demo-hello.localhost", "/echo?name=b")
    assert r.status_code == 503 and "retry-after" in r.headers and "already serves 1 set of class parameters" in r.text


def test_a_waiting_set_whose_parameters_changed_is_told_to_retry(gw: Gateway) -> None:
    gw.routes(parent())
    pending = in_background(gw, "/echo?name=ann")
    gw.wait_event(lambda e: e["type"] == "wake")
    # The class gained a required parameter: `name=ann&n=1` no longer names a set.
    routes(gw, endpoint(params=[*PARAMS, {"name": "mood", "type": "str"}]))
    r = pending.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 503 and "the app changed while this request waited" in r.text


def test_a_stopped_parent_answers_503_without_making_a_set(gw: Gateway) -> None:
    gw.routes(parent(state="stopped"))
    r = gw.get("demo-hello.localhost", "/echo?name=a")
    assert r.status_code == 503 and "stopped" in r.text
    index = gw.get("localhost", "/api/endpoints").json()
    assert [e["name"] for e in index] == ["hello"]
