"""A red line over the table while the latest edit of the app file does not load (the previous
version keeps serving, so the table below stays true)."""

from __future__ import annotations

import os

from mwtui.engine.manifest import LoadError
from rich.text import Text
from textual.widgets import Static


def banner_text(error: LoadError, serving: bool = True) -> Text:
    lead = (
        "✖ the latest edit does not load; the previous version keeps serving. "
        if serving
        else "✖ the app file does not load yet; the next good save starts it. "
    )
    out = Text.assemble((lead, "bold red"))
    out.append(error.message.strip().splitlines()[0] if error.message.strip() else "")
    if error.file:
        out.append(f"  ({os.path.basename(error.file)}{f':{error.line}' if error.line else ''})", style="grey70")
    return out


class ReloadBanner(Static):
    def show(self, error: LoadError | None, serving: bool = True) -> None:
        self.display = error is not None
        if error is not None:
            self.update(banner_text(error, serving))
