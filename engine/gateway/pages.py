"""Bodies the gateway writes itself: the index page, /api/endpoints, /metrics, and error texts.

None of this is on the proxy's hot path; clarity beats speed here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any, Final

from ..labels import label_url
from .metrics import LATENCY_BOUNDS_MS, EndpointStats
from .routes import Endpoint, RouteTable

MISSING_CREDENTIALS = b"modal-http: missing credentials for proxy authorization"
INVALID_CREDENTIALS = b"modal-http: invalid credentials for proxy authorization"


def public_host(host: str) -> str:
    """The host to print in a URL for a listener bound to `host`."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class View:
    """What the pages read: the current table, the engine's latest status, our ports."""

    def __init__(
        self,
        table: RouteTable,
        status: list[dict[str, Any]],
        stats: Mapping[str, EndpointStats],
        own_ports: Mapping[str, int],
        host: str,
        port: int,
        app: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app or {}  # the engine's view of the app as a whole (see api_app)
        self.table = table
        self.status = status
        self.stats = stats
        self.own_ports = own_ports
        self.host = public_host(host)
        self.port = port

    def url(self, ep: Endpoint) -> str:
        url = label_url(ep.label, self.port)
        return url + "/?" + ep.name.partition("?")[2] if ep.parent is not None else url

    def endpoints(self) -> list[dict[str, Any]]:
        """The engine's status objects in its order, our live fields merged in; endpoints the engine
        has not described yet (routes came first) get a minimal object built from the routes."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for obj in self.status:
            name = obj.get("name")
            if not isinstance(name, str):
                continue
            seen.add(name)
            out.append(self._merge(dict(obj), name))
        for ep in self.table.endpoints.values():
            if ep.name in seen:
                continue
            obj = {
                "name": ep.name, "label": ep.label, "kind": None, "url": self.url(ep), "state": ep.state,
                "replicas": {"ready": len(ep.upstreams), "starting": 0, "desired": None, "min": None, "max": None},
                "cpu_percent": None, "rss_bytes": None, "last_error": None,
            }
            out.append(self._merge(obj, ep.name))
        return out

    def _merge(self, obj: dict[str, Any], name: str) -> dict[str, Any]:
        stats = self.stats.get(name)
        obj.update(stats.live() if stats else EndpointStats().live())
        ep = self.table.endpoints.get(name)
        if ep is not None:
            obj.setdefault("label", ep.label)
            obj.setdefault("url", self.url(ep))
            obj.setdefault("domains", list(ep.domains))
            obj.setdefault("requires_proxy_auth", ep.requires_proxy_auth)
        own = self.own_ports.get(name)
        obj["own_port"] = own
        obj.setdefault("own_url", f"http://{self.host}:{own}" if own else None)
        return obj


def api_endpoints(view: View) -> bytes:
    return json.dumps(view.endpoints(), default=str).encode()


def api_app(app: Mapping[str, Any]) -> bytes:
    """`/api/app`: name, file, generation, reload state and `load_error` (file, line, message, or null)
    as the engine last said; before it has said anything, only that."""
    if not app:
        return json.dumps({"name": None, "load_error": None, "starting": True}).encode()
    return json.dumps(dict(app), indent=1).encode()


def _load_error_html(app: Mapping[str, Any]) -> str:
    err = app.get("load_error")
    if not isinstance(err, dict):
        return ""
    e = html.escape
    where = str(err.get("file") or "") + (f":{err['line']}" if err.get("line") else "")
    serving = "the last version that loaded is still serving" if app.get("endpoints") else "nothing is served yet"
    return (f'<div class=err><b>{e(where or "the app")} does not load</b> ({serving}; the next good save '
            f"recovers)<pre>{e(str(err.get('message') or ''))}</pre></div>")


def index_html(view: View) -> bytes:
    e = html.escape
    rows = []
    for obj in view.endpoints():
        name = obj["name"]
        url = obj.get("url") or ""
        domains = " ".join(
            f'<a href="http://{e(d)}:{view.port}/">{e(d)}</a>' for d in obj.get("domains") or ()
        )
        own = obj.get("own_port")
        own_cell = f'<a href="http://{e(view.host)}:{own}/">{own}</a>' if own else ""
        replicas = obj.get("replicas") or {}
        ready = replicas.get("ready", "")
        desired = replicas.get("desired")
        err = obj.get("last_error") or ""
        lock = " 🔑" if obj.get("requires_proxy_auth") else ""
        url_cell = f'<a href="{e(url)}/">{e(url)}</a>' if url else ""  # a function called by others has none
        rows.append(
            f"<tr><td>{e(str(name))}{lock}</td><td>{e(str(obj.get('kind') or ''))}</td>"
            f"<td class=s-{e(str(obj.get('state')))}>{e(str(obj.get('state')))}</td>"
            f"<td>{url_cell}</td><td>{domains}</td><td>{own_cell}</td>"
            f"<td>{e(str(ready))}{'' if desired is None else '/' + e(str(desired))}</td>"
            f"<td>{obj.get('rps', 0):.1f}</td><td>{obj.get('requests_total', 0)}</td>"
            f"<td>{e(str(err))}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan=10>no endpoints yet</td></tr>'
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mwtui</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .3em .8em; text-align: left; border-bottom: 1px solid #ddd; }}
.s-running {{ color: #080; }} .s-failed {{ color: #b00; }} .s-stopped, .s-idle {{ color: #777; }}
.err {{ border-left: 4px solid #b00; padding: .2em 1em; margin: 1em 0; background: #fff4f4; }}
</style></head><body>
<h1>mwtui</h1>
{_load_error_html(view.app)}
<table><tr><th>endpoint</th><th>kind</th><th>state</th><th>URL</th><th>custom domains</th><th>own port</th>
<th>replicas</th><th>req/s</th><th>requests</th><th>last error</th></tr>
{body}
</table>
<p><a href="/api/app">/api/app</a> · <a href="/api/endpoints">/api/endpoints</a> · <a href="/metrics">/metrics</a></p>
</body></html>
"""
    return page.encode()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(view: View) -> bytes:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    eps = list(view.table.endpoints.values())
    for ep in eps:
        ep.stats.settle()
    label = {ep.name: f'endpoint="{_esc(ep.name)}"' for ep in eps}

    family("mwtui_requests_total", "counter", "Requests answered, per endpoint.")
    lines += [f"mwtui_requests_total{{{label[ep.name]}}} {ep.stats.requests_total}" for ep in eps]
    family("mwtui_request_errors_total", "counter", "Requests answered with a 5xx status, per endpoint.")
    lines += [f"mwtui_request_errors_total{{{label[ep.name]}}} {ep.stats.errors_total}" for ep in eps]
    family("mwtui_inflight_requests", "gauge", "Requests in flight, including those held while replicas start.")
    lines += [f"mwtui_inflight_requests{{{label[ep.name]}}} {ep.stats.inflight}" for ep in eps]
    family("mwtui_queued_requests", "gauge", "Requests waiting for a replica (none ready, or all at max_inputs).")
    lines += [f"mwtui_queued_requests{{{label[ep.name]}}} {ep.stats.queued}" for ep in eps]
    family("mwtui_requests_per_second", "gauge", "Request rate over the last few seconds.")
    lines += [f"mwtui_requests_per_second{{{label[ep.name]}}} {ep.stats.rps:.3f}" for ep in eps]
    family("mwtui_ready_replicas", "gauge", "Replicas the gateway routes to.")
    lines += [f"mwtui_ready_replicas{{{label[ep.name]}}} {len(ep.upstreams)}" for ep in eps]

    family("mwtui_request_duration_seconds", "histogram", "Time from request head to end of response.")
    for ep in eps:
        lab, st = label[ep.name], ep.stats
        running = 0
        for bound, count in zip(LATENCY_BOUNDS_MS, st.buckets, strict=False):
            running += count
            lines.append(f'mwtui_request_duration_seconds_bucket{{{lab},le="{bound / 1000:g}"}} {running}')
        running += st.buckets[-1]
        lines.append(f'mwtui_request_duration_seconds_bucket{{{lab},le="+Inf"}} {running}')
        lines.append(f"mwtui_request_duration_seconds_sum{{{lab}}} {st.latency_sum_ms / 1000:.6f}")
        lines.append(f"mwtui_request_duration_seconds_count{{{lab}}} {running}")
    for q in ("p50", "p95"):
        family(f"mwtui_request_duration_{q}_seconds", "gauge", f"{q} latency over the last few seconds.")
        for ep in eps:
            value = getattr(ep.stats, f"{q}_ms")
            if value is not None:
                lines.append(f"mwtui_request_duration_{q}_seconds{{{label[ep.name]}}} {value / 1000:.6f}")

    family("mwtui_upstream_inflight_requests", "gauge", "Requests in flight, per replica.")
    family_total: list[str] = []
    for ep in eps:
        for up in ep.upstreams:
            lab = f'{label[ep.name]},upstream="{_esc(up.id)}"'
            lines.append(f"mwtui_upstream_inflight_requests{{{lab}}} {up.stats.inflight}")
            family_total.append(f"mwtui_upstream_requests_total{{{lab}}} {up.stats.requests_total}")
    family("mwtui_upstream_requests_total", "counter", "Requests answered, per replica.")
    lines += family_total
    return ("\n".join(lines) + "\n").encode()


def unknown_host(view: View, host: bytes) -> bytes:
    out = [f"mwtui: no endpoint answers to host {_shown(host)!r}.", ""]
    if view.table.endpoints:
        out.append("Known endpoints:")
        for ep in view.table.endpoints.values():
            if ep.parent is not None or ep.internal:  # a parameter set (its parent's line names the host), a call path
                continue
            extra = [f"http://{d}:{view.port}" for d in ep.domains]
            own = view.own_ports.get(ep.name)
            if own:
                extra.append(f"http://{view.host}:{own}")
            also = f"  (also {', '.join(extra)})" if extra else ""
            out.append(f"  {ep.label:<30} {view.url(ep)}  [{ep.name}]{also}")
    else:
        out.append("No endpoints are known yet.")
    out += ["", f"Index: http://localhost:{view.port}/ (mwtui's own pages answer only to a loopback host)", ""]
    return "\n".join(out).encode()


def unknown_host_short(host: bytes) -> bytes:
    """The 404 for a client on another machine, or one asking by a name that is not local: no list."""
    return f"mwtui: no endpoint answers to host {_shown(host)!r}\n".encode()


def invalid_host(host: bytes) -> bytes:
    return f"mwtui: invalid Host header {_shown(host)!r} (want name[:port])\n".encode()


def host_not_allowed(host: bytes) -> bytes:
    return (
        f"mwtui: this port does not answer to host {_shown(host)!r}; it takes localhost, IP addresses, the "
        "app's labels and custom domains, and names given to mwtui with --allow-host\n"
    ).encode()


def _shown(host: bytes) -> str:
    """A client's Host as we quote it back: printable ASCII only, and short."""
    text = "".join(c if " " <= c <= "~" else "?" for c in host[:200].decode("latin-1"))
    return text or "(none)"


# Instead of a traceback, for a client on another machine: the person at mwtui sees it on the screen.
SEE_MWTUI: Final = "(the error is shown in mwtui on the machine that serves it)"
BARE_LOCAL_ONLY: Final = b"mwtui: its own pages answer only to clients on this machine\n"


def stopped(name: str) -> bytes:
    return f"mwtui: endpoint {name} is stopped in mwtui (press s in mwtui to start it)\n".encode()


def failed(name: str, last_error: Any) -> bytes:
    detail = str(last_error).strip() if last_error else "no error was reported"
    return f"mwtui: endpoint {name} failed to start and has no running replica:\n{detail}\n".encode()


def too_many_variants(name: str, limit: int) -> bytes:
    return (
        f"mwtui: endpoint {name} already serves {limit} set{'s' if limit != 1 else ''} of class parameters, "
        "each with replicas of its own (a web_server class on the host's network: one, since its port is "
        "fixed); a new set gets "
        "a pool once one of those scales to zero. Try again shortly.\n"
    ).encode()


def variant_gone(name: str) -> bytes:
    parent = name.partition("?")[0]
    return (
        f"mwtui: {name} is no longer served: the app changed while this request waited (its class's "
        f"parameters, or {parent} itself). Send it again.\n"
    ).encode()


def not_ready(name: str, state: str, waited: float) -> bytes:
    return (
        f"mwtui: endpoint {name} has no ready replica yet (state {state}); waited {waited:g}s. "
        "Try again shortly.\n"
    ).encode()


def all_busy(name: str, replicas: int, max_inputs: int, waited: float) -> bytes:
    return (
        f"mwtui: endpoint {name} stayed busy: its {replicas} replica(s) each had max_inputs={max_inputs} "
        f"requests in flight for the {waited:g}s this request waited. Try again shortly.\n"
    ).encode()


def queue_full(name: str, waiting: int) -> bytes:
    return (
        f"mwtui: endpoint {name} already has {waiting} requests waiting for a replica (the gateway's "
        "--max-queue); try again shortly.\n"
    ).encode()


def timed_out(name: str, timeout: float) -> bytes:
    return (
        f"mwtui: endpoint {name} did not answer within its timeout of {timeout:g}s "
        "(@app.function(timeout=...)); the request was cancelled.\n"
    ).encode()


def connect_failed(name: str, replica: str, address: str, err: BaseException) -> bytes:
    why = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return f"mwtui: cannot reach endpoint {name} replica {replica} at {address}: {why}\n".encode()


def upstream_closed(name: str, replica: str) -> bytes:
    return f"mwtui: endpoint {name} replica {replica} closed the connection before responding\n".encode()


def bad_upstream(name: str, replica: str) -> bytes:
    return f"mwtui: endpoint {name} replica {replica} sent a malformed HTTP response\n".encode()


def bare_not_found(path: bytes) -> bytes:
    return (
        f"mwtui: no page {path.decode('latin-1')!r} here. Endpoints are reached by Host "
        "(http://<label>.localhost:<port>/); see / for the list, /api/endpoints, /metrics.\n"
    ).encode()
