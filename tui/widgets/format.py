"""Small text formatters shared by the widgets: durations, sizes, kinds, state glyphs, curl lines."""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from typing import Any

from mwtui.engine.manifest import EndpointSpec
from mwtui.engine.status import CAP_DEFAULT, CAP_MAX_CONTAINERS, CAP_WEB_SERVER, EndpointStatus
from rich.text import Text

GLYPHS: dict[str, tuple[str, str]] = {
    "running": ("●", "green"),
    "starting": ("◐", "yellow"),
    "idle": ("○", "grey50"),
    "stopped": ("■", "grey50"),
    "failed": ("✖", "red"),
}


def glyph(state: str) -> Text:
    """A span, not a styled Text, so that text appended to it keeps its own colour."""
    char, colour = GLYPHS.get(state, ("?", "white"))
    return Text.assemble((char, colour))


def state_text(state: str) -> Text:
    char, colour = GLYPHS.get(state, ("?", "white"))
    return Text(f"{char} {state}", style=colour)


def kind(spec: EndpointSpec) -> str:
    return f"{spec.kind} {spec.method}" if spec.kind == "fastapi" and spec.method else spec.kind


def reach(e: EndpointStatus) -> str:
    """How a function or class without a URL is reached, for its URL cell: its schedule and next run,
    and the pools that called it in the last minute (`every 5 s, next 10:00:05 ← api`)."""
    from mwtui.engine.schedules import describe

    parts = []
    if e.spec.schedule:
        parts.append(describe(e.spec.schedule))
        if e.next_run is not None:
            parts.append(f"next {time.strftime('%H:%M:%S', time.localtime(e.next_run))}")
    text = ", ".join(parts)
    if e.callers:
        text += (" " if text else "") + "← " + ", ".join(e.callers)
    return text or "not called yet"


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 10_000:
        return f"{v / 1000:.0f}s"
    if v >= 1000:
        return f"{v / 1000:.1f}s"
    return f"{v:.0f}ms" if v >= 10 else f"{v:.1f}ms"


def mem(n: int) -> str:
    if not n:
        return "-"
    if n >= 2**30:
        return f"{n / 2**30:.1f}G"
    return f"{n / 2**20:.0f}M"


def cpu(p: float) -> str:
    return f"{p:.0f}%"


def age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# Where a replica cap comes from (EndpointStatus.max_source), as the details say it.
CAP_SOURCES = {
    CAP_MAX_CONTAINERS: "max_containers",
    CAP_DEFAULT: "mwtui default, --max-replicas",
    CAP_WEB_SERVER: "web_server on the host's network: one fixed port",
}


def range_text(e: EndpointStatus) -> str:
    top = e.cap[0]
    return f"{e.spec.min_containers}..{'∞' if top is None else top}"


def max_text(e: EndpointStatus) -> str:
    """The replica cap in force and where it comes from: `8 (mwtui default, --max-replicas)`."""
    top, source = e.cap
    if top is None:
        return "∞"
    if e.max_source is None:  # made without it (by hand): the spec's own number, as it reads there
        return str(top)
    return f"{top} ({CAP_SOURCES.get(source or '', source)})"


def snapshot_text(snapshot: Mapping[str, Any] | None) -> str:
    """Where a pool's replicas come from, after "replicas" in the detail screen's title."""
    if not snapshot or snapshot.get("mode") == "starting":
        return ""
    if snapshot.get("mode") == "snapshot":
        enters = snapshot.get("snap_enters") or 0
        snap = f", {enters} @enter(snap=True) run once" if enters else ""
        return f" · forked from generation {snapshot.get('generation')}'s snapshot (import {ms(snapshot.get('import_ms'))}{snap})"
    return f" · each imports the app itself, no snapshot: {snapshot.get('reason') or 'none taken'}"


def first_line(text: str | None, width: int = 80) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:width] if lines else ""


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/", 1)[0]


def curl(spec: EndpointSpec, url: str, host: str | None = None) -> str:
    """A curl line that works as pasted: the right method, a JSON body for writes, the Host header for a
    custom domain (which does not resolve locally), and the proxy-auth headers when they are needed."""
    parts = ["curl"]
    method = (spec.method or "GET").upper() if spec.kind == "fastapi" else "GET"
    if method != "GET":
        parts += ["-X", method]
        if method in ("POST", "PUT", "PATCH"):
            parts += ["-H", "content-type: application/json", "-d", "{}"]
    if host:
        parts += ["-H", f"Host: {host}"]
    if spec.requires_proxy_auth:
        parts += ["-H", "Modal-Key: $MODAL_KEY", "-H", "Modal-Secret: $MODAL_SECRET"]
    parts.append(url if "/" in url.split("://", 1)[-1] else url + "/")  # a parameter set's has /?values
    # Keep $MODAL_KEY expandable: quote everything else, but double-quote the auth headers.
    out = []
    for p in parts:
        out.append(f'"{p}"' if "$MODAL_" in p else shlex.quote(p))
    return " ".join(out)


def endpoint_urls(e: EndpointStatus) -> list[tuple[str, str, str]]:
    """Every way to reach an endpoint: (what, url, curl)."""
    s = e.spec
    if s.is_call:  # no URL: how the app reaches it instead (no curl line to copy)
        return [("reached", reach(e), "")]
    out = [("label", e.url, curl(s, e.url))]
    port = port_of(e.url)
    query = e.url.partition("?")[2]
    rest = f"/?{query}" if query else ""  # a parameter set is reached with its values in the query
    for domain in s.custom_domains:
        # A custom domain does not resolve on this machine: curl the gateway with that Host.
        out.append(("domain", f"http://{domain}:{port}{rest}", curl(s, f"http://127.0.0.1:{port}{rest}", domain)))
    if e.own_url:
        out.append(("own port", e.own_url, curl(s, e.own_url)))
    return out
