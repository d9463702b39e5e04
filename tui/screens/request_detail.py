"""One captured request: its timings as a bar, the request's and the response's headers and bodies.
`r` replays it, `c` copies it as curl, `esc` goes back to the list."""

from __future__ import annotations

from importlib import resources
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from ..widgets import request_view as view
from ..widgets.key_bar import KeyBar


class RequestDetailScreen(Screen[None]):
    CSS_PATH = str(resources.files("mwtui.assets").joinpath("inspector.tcss"))
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("r", "replay", "replay", tooltip="send this request again through the gateway"),
        Binding("c", "copy_curl", "copy curl", tooltip="copy this request as a curl command"),
    ]

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        e = self.entry
        yield Static(view.title(e), id="request-title")
        with VerticalScroll(id="request-body"):
            yield self._section("timings", view.timings(e))
            yield self._section("request headers", view.headers(e.get("request_headers") or []))
            yield self._section("request body", view.body(e.get("request_body")))
            yield self._section("response headers", view.headers(e.get("response_headers") or []))
            ws = view.websocket(e)
            yield self._section("response body" if ws is None else "websocket", view.body(e.get("response_body"))
                                if ws is None else ws)
            yield self._section("as curl · c copies it", e.get("curl") or "")
        yield KeyBar()

    @staticmethod
    def _section(title: str, content: Any) -> Static:
        box = Static(content, classes="section")
        box.border_title = title
        return box

    def action_copy_curl(self) -> None:
        curl = str(self.entry.get("curl") or "")
        if curl:
            self.app.copy_to_clipboard(curl)
            self.notify(curl, title="copied as curl", timeout=4)

    def action_replay(self) -> None:
        from .inspector import replay

        replay(self, self.entry)
