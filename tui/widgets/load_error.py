"""Shown in place of the table when the app file does not load (or the gateway cannot start)."""

from __future__ import annotations

import os

from mwtui.engine.manifest import LoadError
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static


def user_frames(tb: str, file: str) -> str:
    """The traceback from the user's own file on: the frames of mwtui's loader above it say nothing
    about what to fix."""
    lines = tb.rstrip().splitlines()
    mark = f'  File "{file}"'
    start = next((i for i, ln in enumerate(lines) if file and ln.startswith(mark)), None)
    if start is None or not lines or not lines[0].startswith("Traceback"):
        return "\n".join(lines)
    return "\n".join([lines[0], *lines[start:]])


def load_error_text(error: LoadError | str) -> Text:
    if isinstance(error, str):
        return Text(error)
    out = Text.assemble((error.message.strip(), "bold"))
    if error.file:
        # Relative to where the user stands when that is shorter, as `mwtui serve` prints it.
        rel = os.path.relpath(error.file)
        where = error.file if rel.startswith("..") else rel
        out.append("\n\n")
        out.append(f"{where}{f':{error.line}' if error.line else ''}", style="underline")
    if error.traceback:
        out.append("\n\n")
        out.append(user_frames(error.traceback, error.file), style="grey70")
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
