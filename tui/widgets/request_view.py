"""How one captured request reads: its title line, its timings as a bar, headers and bodies (JSON
pretty-printed by the gateway, binary as a size and a hex head). Pure renderables, no I/O."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 40
PHASES = (("queue_ms", "waiting for a replica", "yellow"), ("connect_ms", "connecting", "magenta"),
          ("ttfb_ms", "replica to first byte", "cyan"))


def status_style(status: int) -> str:
    if status >= 500 or status == 0:
        return "red"
    if status >= 400:
        return "yellow"
    if status >= 300:
        return "cyan"
    return "green"


def title(e: dict[str, Any]) -> Text:
    status = int(e.get("status") or 0)
    out = Text.assemble((" request ", "bold reverse"), f"  #{e.get('id')}  ", (str(e.get("method", "")), "bold"),
                        f" {e.get('path', '')} → ", (str(status or "-"), status_style(status)))
    out.append(f" · {float(e.get('duration_ms') or 0):.1f} ms · {e.get('endpoint')}")
    if e.get("replica"):
        gen = f", generation {e['generation']}" if e.get("generation") else ""
        out.append(f" · replica {e['replica']}{gen}")
    if e.get("woke"):
        out.append(" · woke the pool", style="yellow")
    if e.get("replay_of"):
        out.append(f" · replay of #{e['replay_of']}", style="cyan")
    return out


def timings(e: dict[str, Any]) -> RenderableType:
    """Each phase as a bar on one scale (the whole request), with its milliseconds."""
    total = float(e.get("duration_ms") or 0) or 1.0
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="grey70", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    start = 0.0
    for key, label, colour in PHASES:
        value = e.get(key)
        if value is None:
            grid.add_row(label, Text("·" * 1, style="grey50"), "-")
            continue
        ms = float(value)
        lead = int(start / total * BAR_WIDTH)
        width = max(1, int(ms / total * BAR_WIDTH))
        grid.add_row(label, Text(" " * lead) + Text("█" * width, style=colour), f"{ms:.2f} ms")
        start += ms
    grid.add_row("total", Text("█" * BAR_WIDTH, style="grey50"), f"{total:.2f} ms")
    if e.get("error"):
        grid.add_row("gateway", Text(str(e["error"]), style="red"), "")
    return grid


def headers(pairs: list[list[str]]) -> RenderableType:
    if not pairs:
        return Text("none", style="grey50")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in pairs:
        grid.add_row(f"{name}:", Text(value, style="grey50" if value == "••••••" else ""))
    return grid


def body(b: dict[str, Any] | None) -> RenderableType:
    if not b or not b.get("size"):
        return Text("empty", style="grey50")
    size = int(b["size"])
    note = f"{size} bytes"
    if b.get("truncated"):
        note += f", the first {b['kept']} kept"
    if b.get("chunks"):
        note += f", {b['chunks']} chunks"
    head = Text(note, style="grey50")
    if b.get("binary"):
        return Group(head, Text("binary; hex of its start:", style="grey50"), Text(str(b.get("hex", ""))))
    return Group(head, Text(str(b.get("text", ""))))


def websocket(e: dict[str, Any]) -> RenderableType | None:
    ws = e.get("websocket")
    if not ws:
        return None
    return Text(f"WebSocket: {ws['bytes_from_client']} bytes from the client, "
                f"{ws['bytes_from_replica']} from the replica (frames included)")
