"""Shown in place of the table when the app file does not load (or the gateway cannot start)."""

from __future__ import annotations

import os

from mwtui.engine.manifest import LoadError
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static


def load_error_text(error: LoadError | str) -> Text:
    if isinstance(error, str):
        return Text(error)
    out = Text(error.message.strip(), style="bold")
    if error.file:
        where = os.path.relpath(error.file) if os.path.isabs(error.file) else error.file
        out.append("\n\n")
        out.append(f"{where}{f':{error.line}' if error.line else ''}", style="underline")
    if error.traceback:
        out.append("\n\n")
        out.append(error.traceback.rstrip(), style="grey70")
    out.append("\n\nFix the file and start mwtui again; q quits.", style="grey50")
    return out


class LoadErrorPanel(VerticalScroll):
    """A bordered, scrollable panel: the message first, then where, then the traceback."""

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static(id="load-error-text")

    def show(self, title: str, error: LoadError | str) -> None:
        self.border_title = title
        self.query_one("#load-error-text", Static).update(load_error_text(error))
        self.display = True
