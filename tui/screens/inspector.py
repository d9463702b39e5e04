"""The request inspector: the newest requests through the gateway, live, for one endpoint or all.

The gateway keeps them (engine/gateway/inspector.py); this screen asks for them twice a second and
follows the newest unless the person has moved the cursor down. `/` filters, `enter` opens one request
(headers, bodies, timings), `r` replays it, `c` copies it as curl, `a` switches between the endpoint
and all of them, `esc` goes back.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from ..widgets.key_bar import KeyBar
from ..widgets.request_view import status_style
from .request_detail import RequestDetailScreen

REFRESH_S = 0.5
COLUMNS = (("time", "time"), ("method", "method"), ("path", "path"), ("status", "status"), ("ms", "ms"),
           ("replica", "replica"))


def matches(entry: dict[str, Any], text: str) -> bool:
    """The filter: every word of it appears in the method, path, status, endpoint or replica."""
    hay = " ".join(str(entry.get(k) or "") for k in ("method", "path", "status", "endpoint", "replica")).lower()
    return all(word in hay for word in text.lower().split())


class InspectorScreen(Screen[None]):
    CSS_PATH = str(resources.files("mwtui.assets").joinpath("inspector.tcss"))
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("enter", "open", "details", show=False),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("r", "replay", "replay", tooltip="send the selected request again through the gateway"),
        Binding("c", "copy_curl", "copy curl", tooltip="copy the selected request as a curl command"),
        Binding("a", "toggle_all", "all/one", tooltip="every endpoint's requests, or the selected endpoint's"),
    ]

    def __init__(self, endpoint: str | None) -> None:
        super().__init__()
        self.endpoint = endpoint  # None: every endpoint
        self.first_endpoint = endpoint
        self.entries: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Static(id="inspector-title")
        yield Input(placeholder="filter: words in method, path, status, replica (esc clears)", id="inspector-filter")
        yield DataTable(id="inspector-table", cursor_type="row", zebra_stripes=False)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        self.query_one(Input).display = False
        table.focus()
        self._title()
        self.refresh_entries()
        self.set_interval(REFRESH_S, self.refresh_entries)

    # ----- data
    @work(exclusive=True, group="inspector", exit_on_error=False)
    async def refresh_entries(self) -> None:
        engine = getattr(self.app, "engine", None)
        if engine is None or not hasattr(engine, "requests"):
            return
        try:
            entries = await engine.requests(self.endpoint)
        except Exception:  # noqa: BLE001 - the gateway restarting: try again at the next tick
            return
        self.show_entries(entries)

    def show_entries(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        shown = [e for e in entries if matches(e, self.filter_text)] if self.filter_text else entries
        if [e["id"] for e in shown] == [e["id"] for e in self.shown]:
            return
        table = self.query_one(DataTable)
        selected = self.selected()
        follow = table.cursor_row <= 0  # at the newest: keep following; scrolled down: stay put
        self.shown = shown
        table.clear()
        for e in shown:
            table.add_row(*self._cells(e), key=str(e["id"]))
        if shown:
            ids = [e["id"] for e in shown]
            row = 0 if follow or selected is None or selected["id"] not in ids else ids.index(selected["id"])
            table.move_cursor(row=row, animate=False)
        self._title()

    def _cells(self, e: dict[str, Any]) -> list[Text]:
        status = int(e.get("status") or 0)
        replay = " ↻" if e.get("replay_of") else ""
        return [
            Text(time.strftime("%H:%M:%S", time.localtime(float(e.get("t") or 0))), style="grey50"),
            Text(str(e.get("method", ""))),
            Text(str(e.get("path", "")) + replay, overflow="ellipsis", no_wrap=True),
            Text(str(status or "-"), style=status_style(status)),
            Text(f"{float(e.get('duration_ms') or 0):.1f}", justify="right"),
            Text(str(e.get("replica") or "-"), style="grey70"),
        ]

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.shown or table.cursor_row < 0 or table.cursor_row >= len(self.shown):
            return None
        return self.shown[table.cursor_row]

    def _title(self) -> None:
        what = self.endpoint or "every endpoint"
        follow = "following" if self.query_one(DataTable).cursor_row <= 0 else "paused (↑ to the top follows)"
        count = f"{len(self.shown)} of {len(self.entries)}" if self.filter_text else f"{len(self.entries)}"
        text = Text.assemble((" requests ", "bold reverse"), f"  {what} · {count} kept · {follow}")
        if self.filter_text:
            text.append(f" · filter: {self.filter_text}", style="yellow")
        self.query_one("#inspector-title", Static).update(text)

    @on(DataTable.RowHighlighted)
    def _moved(self) -> None:
        self._title()

    # ----- actions
    def action_back(self) -> None:
        box = self.query_one(Input)
        if box.display:
            box.value = ""
            self._close_filter()
            return
        self.app.pop_screen()

    def action_open(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.app.push_screen(RequestDetailScreen(entry))

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def action_filter(self) -> None:
        box = self.query_one(Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#inspector-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.shown = []  # shown again, filtered
        self.show_entries(self.entries)

    @on(Input.Submitted, "#inspector-filter")
    def _filter_done(self) -> None:
        self._close_filter()

    def _close_filter(self) -> None:
        box = self.query_one(Input)
        self.filter_text = box.value.strip()
        box.display = bool(self.filter_text)
        self.query_one(DataTable).focus()
        self.shown = []
        self.show_entries(self.entries)

    def action_toggle_all(self) -> None:
        self.endpoint = None if self.endpoint else self.first_endpoint
        self.shown = []
        self.refresh_entries()

    def action_copy_curl(self) -> None:
        entry = self.selected()
        if entry is not None and entry.get("curl"):
            self.app.copy_to_clipboard(str(entry["curl"]))
            self.notify(str(entry["curl"]), title="copied as curl", timeout=4)

    def action_replay(self) -> None:
        entry = self.selected()
        if entry is not None:
            replay(self, entry)


def replay(screen: Screen[Any], entry: dict[str, Any]) -> None:
    """Replay `entry` in a worker of `screen`, and say how it went."""

    async def run() -> None:
        answer = await screen.app.engine.replay_request(int(entry["id"]))  # type: ignore[attr-defined]
        if "error" in answer:
            screen.notify(str(answer["error"]), title="replay failed", severity="warning", timeout=5)
        else:
            screen.notify(f"request {answer['id']}: {answer['status']}", title=f"replayed request {entry['id']}",
                          timeout=4)

    screen.run_worker(run(), group="replay", exit_on_error=False)
