"""The logs of the selected endpoint's pool: replica-prefixed, follow mode, a live filter."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable

from mwtui.engine.events import ENGINE_LOG as ENGINE_POOL  # the engine's own lines
from mwtui.engine.events import LogLine
from mwtui.engine.status import LOG_LINES_KEPT
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, RichLog, Static

from ..messages import FilterClosed

PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")


def replica_style(replica: str) -> str:
    # Stable across runs (not hash()), so a replica keeps its colour and snapshots stay fixed.
    return PALETTE[zlib.crc32(replica.encode()) % len(PALETTE)]


def plain_line(line: LogLine) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(line.t))} {line.replica:<14} {line.text}"


def styled_line(line: LogLine, needle: str) -> Text:
    # Text.assemble, not Text(style=): a Text's own style would colour everything appended after.
    out = Text.assemble((time.strftime("%H:%M:%S ", time.localtime(line.t)), "grey50"))
    out.append(f"{line.replica:<14} ", style=replica_style(line.replica))
    out.append(line.text)
    if needle:
        out.highlight_words([needle], style="black on yellow", case_sensitive=False)
    return out


class LogPane(Vertical):
    """`source(pool)` gives the lines kept so far; `append()` adds the ones that arrive later."""

    BINDINGS = [Binding("escape", "clear_filter", "clear filter", show=False)]

    def __init__(self, source: Callable[[str], Iterable[LogLine]], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.source = source
        self.pool: str | None = None
        self.needle = ""
        self.follow = True
        self.shown: list[LogLine] = []  # what the filter lets through, for copy and save

    def compose(self) -> ComposeResult:
        yield Static(id="log-title")
        yield RichLog(id="log-view", max_lines=LOG_LINES_KEPT, wrap=False, markup=False, auto_scroll=True)
        yield Input(placeholder="filter: type to narrow, enter to keep, esc to clear", id="log-filter")

    def on_mount(self) -> None:
        self.query_one("#log-filter", Input).display = False
        self._title()

    @property
    def filter_box(self) -> Input:
        return self.query_one("#log-filter", Input)

    @property
    def view(self) -> RichLog:
        return self.query_one("#log-view", RichLog)

    # ----- content
    def show_pool(self, pool: str | None) -> None:
        if pool == self.pool:
            return
        self.pool = pool
        self.rebuild()

    def rebuild(self) -> None:
        self.view.clear()
        self.shown = []
        if self.pool is not None:
            self._write([ln for ln in self.source(self.pool) if self._matches(ln)])
        self._title()

    def append(self, lines: Iterable[LogLine]) -> None:
        new = [ln for ln in lines if ln.pool in (self.pool, ENGINE_POOL) and self._matches(ln)]
        if new:
            self._write(new)
            self._title()

    def _write(self, lines: list[LogLine]) -> None:
        self.shown.extend(lines)
        if len(self.shown) > LOG_LINES_KEPT:
            del self.shown[: len(self.shown) - LOG_LINES_KEPT]
        view = self.view
        for ln in lines:
            view.write(styled_line(ln, self.needle), scroll_end=self.follow)

    def _matches(self, line: LogLine) -> bool:
        if not self.needle:
            return True
        n = self.needle.lower()
        return n in line.text.lower() or n in line.replica.lower()

    def text(self) -> str:
        return "\n".join(plain_line(ln) for ln in self.shown) + ("\n" if self.shown else "")

    def _title(self) -> None:
        out = Text.assemble((" logs", "bold"))
        out.append(f" · {self.pool or '-'}")
        out.append(" · follow" if self.follow else " · paused (f follows)", style="" if self.follow else "yellow")
        if self.needle:
            out.append(f" · filter “{self.needle}” ({len(self.shown)} lines)", style="bold yellow")
        else:
            out.append(f" · {len(self.shown)} lines", style="grey50")
        self.query_one("#log-title", Static).update(out)

    def on_resize(self) -> None:
        if self.follow:  # a new size re-lays the lines out: keep the end in view
            self.view.scroll_end(animate=False)

    # ----- follow
    def toggle_follow(self) -> bool:
        self.follow = not self.follow
        self.view.auto_scroll = self.follow
        if self.follow:
            self.view.scroll_end(animate=False)
        self._title()
        return self.follow

    # ----- filter
    def open_filter(self) -> None:
        box = self.query_one("#log-filter", Input)
        box.display = True
        box.value = self.needle
        # Now, not via focus() (which waits for the queue): keys typed right after `/` (or pasted
        # with it) are already queued behind it, and must land in the box, not on the app's keys.
        self.screen.set_focus(box)

    def set_filter(self, needle: str) -> None:
        if needle != self.needle:
            self.needle = needle
            self.rebuild()

    def action_clear_filter(self) -> None:
        self.set_filter("")
        self._close_filter()

    def _close_filter(self) -> None:
        box = self.query_one("#log-filter", Input)
        box.display = False
        self.post_message(FilterClosed())

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter(event.value)
        self._close_filter()
