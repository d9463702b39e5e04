"""The caller's end of a call to another pool: one HTTP request through mwtui's gateway per call.

The gateway routes it by Host to the target's replicas as it routes web requests, so that queueing at
`max_inputs`, waking a pool from zero, autoscaling, metrics and the function's `timeout` all apply to
calls as to HTTP. What travels is `call_wire`'s. A gateway answer that is not a call's reply reads as
Modal's exceptions: 504 (the function's timeout) as `FunctionTimeoutError`, anything else (the pool
stopped or failed, no such pool) as `RemoteError` with the gateway's own words.

Connections are kept alive, one per thread (calls from `.map()` run in many threads at once).
"""

from __future__ import annotations

import http.client
import os
import threading
from typing import Any

from ..replica_env import APP as APP_ENV
from ..replica_env import CALL_TOKEN as TOKEN_ENV
from ..replica_env import GATEWAY as GATEWAY_ENV
from .call_wire import CONTENT_TYPE, TOKEN_HEADER, Call, decode_reply, encode_call
from .exception import FunctionTimeoutError, NotFoundError, RemoteError

__all__ = ["APP_ENV", "GATEWAY_ENV", "available", "call", "gateway_address"]

_local = threading.local()


def gateway_address() -> tuple[str, int] | None:
    raw = os.environ.get(GATEWAY_ENV, "")
    host, _, port = raw.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def available() -> bool:
    """Calls go to the target's own pool: this process is a replica that mwtui's engine started."""
    return gateway_address() is not None and bool(os.environ.get(TOKEN_ENV))


def call(host: str, request: Call, *, address: tuple[str, int] | None = None, timeout_s: float | None = None,
         path: str = "/") -> Any:
    """Send `request` to the pool the gateway serves as `host`; its result, or its exception raised.
    `timeout_s` is the target's own `timeout`, for the message when the gateway stops it there."""
    where = address or gateway_address()
    if where is None:
        raise RemoteError(f"no gateway to call `{host}` through (${GATEWAY_ENV} is not set)")
    body = encode_call(request)
    status, content_type, reply = _post(where, host, body, path)
    if status == 200 and content_type == CONTENT_TYPE:
        return decode_reply(reply)
    text = reply.decode("utf-8", "replace").strip()
    if status == 504:
        raise FunctionTimeoutError(f"Task's current input hit its timeout of {timeout_s:g}s" if timeout_s else text)
    if status == 404 and text.startswith("mwtui: no endpoint answers to host"):
        raise NotFoundError(f"nothing served answers calls for `{host}`")
    raise RemoteError(text or f"the call to `{host}` failed with HTTP {status}")


def served(app: str, name: str) -> tuple[bool, bool]:
    """(is app `app` served, does it have a function or class `name`), asked of the gateway's
    /api/endpoints: what `from_name` needs to say which of the two is missing."""
    import json

    where = gateway_address()
    if where is None:
        return False, False
    conn = http.client.HTTPConnection(*where, timeout=10)
    try:
        conn.request("GET", "/api/endpoints", headers={"Host": "localhost"})
        entries = json.loads(conn.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        return False, False
    finally:
        conn.close()
    mine = [e for e in entries if isinstance(e, dict) and e.get("app") == app]
    names = {str(e.get("name", "")).rpartition(":")[2] for e in mine} | {str(e.get("pool", "")).rpartition(":")[2] for e in mine}
    return bool(mine), name in names


def not_found(kind: str, app: str, name: str) -> NotFoundError:
    """Modal's error for a `from_name` lookup that finds nothing (the part after the colon is the
    server's on Modal; here it says which of the two is not served)."""
    has_app, has_name = served(app, name)
    environment = os.environ.get("MODAL_ENVIRONMENT") or "main"
    why = (f"{kind} '{name}' is not defined in app '{app}'" if has_app
           else f"App '{app}' not found in environment '{environment}' (mwtui serves no such app)")
    return NotFoundError(f"Lookup failed for {kind} '{name}' from the '{app}' app: {why}.")


def _post(where: tuple[str, int], host: str, body: bytes, path: str = "/") -> tuple[int, str, bytes]:
    """One POST on this thread's kept connection; once more on a fresh one if the kept one had been
    closed by the gateway meanwhile (its keep-alive timeout)."""
    headers = {"Host": host, "Content-Type": CONTENT_TYPE, TOKEN_HEADER: os.environ.get(TOKEN_ENV, "")}
    for attempt in (0, 1):
        conn = _connection(where, fresh=attempt > 0)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
            conn.close()
            if attempt:
                raise RemoteError(f"the gateway closed the connection of a call to `{host}`: {exc}") from exc
            continue
        if resp.will_close:
            conn.close()
        return resp.status, resp.getheader("content-type", "") or "", data
    raise AssertionError("unreachable")


def _connection(where: tuple[str, int], fresh: bool) -> http.client.HTTPConnection:
    conns: dict[tuple[str, int], http.client.HTTPConnection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    conn = conns.get(where)
    if conn is None or fresh:
        if conn is not None:
            conn.close()
        # No client-side timeout: the gateway bounds the call by the function's own `timeout`.
        conn = conns[where] = http.client.HTTPConnection(*where)
    return conn
