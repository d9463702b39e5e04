"""The footer, made to fit: when the terminal is too narrow for every key, the least needed ones go
first (`?` lists them all), instead of the row being cut off at the right edge."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer

# Lower goes last; an action not listed here is kept only if there is room after all of these.
PRIORITY: dict[str, int] = {
    "app.help": 0, "app.quit": 0, "app.pop_screen": 0,
    "app.start": 1, "app.stop": 1, "app.restart": 1, "copy_curl": 1,
    "app.scale(1)": 2, "app.scale(-1)": 2,
    "app.toggle_logs": 3, "app.filter": 3,
    "app.copy_url": 4, "app.open": 4,
    "app.autoscale": 5, "app.reload": 5,
}
PALETTE_WIDTH = 12  # "▏^p palette"


def _width(item: Widget) -> int:
    # Compact footer keys: key, a space, the description, a margin of one.
    return len(str(getattr(item, "key_display", ""))) + 1 + len(str(getattr(item, "description", ""))) + 1


def _priority(item: Widget) -> int:
    action = str(getattr(item, "action", ""))
    return PRIORITY.get(action, PRIORITY.get(f"app.{action}", 9))


class KeyBar(Footer):
    def __init__(self, **kw: Any) -> None:
        super().__init__(compact=True, **kw)

    def compose(self) -> ComposeResult:
        items = list(super().compose())
        palette = [w for w in items if w.has_class("-command-palette")]
        keys = [w for w in items if w not in palette]
        budget = (self.size.width or self.app.size.width) - (PALETTE_WIDTH if palette else 0)
        keep: set[int] = set()
        used = 0
        for i in sorted(range(len(keys)), key=lambda i: (_priority(keys[i]), i)):
            if used + _width(keys[i]) <= budget:
                keep.add(i)
                used += _width(keys[i])
        shown = [w for i, w in enumerate(keys) if i in keep]
        self.styles.grid_size_columns = max(1, len(shown))
        yield from shown
        yield from palette

    def on_resize(self) -> None:
        self.refresh(recompose=True)
