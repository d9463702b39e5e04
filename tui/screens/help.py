"""`?`: every key, from the same bindings the footer shows, with a longer word on each."""

from __future__ import annotations

from importlib import resources

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

MOUSE_HELP = (
    "Mouse: click a row to select it, click it again for its details; click a column header to sort "
    "(again to reverse); scroll the logs with the wheel.\nCommand palette: ctrl+p."
)


def keys_table(bindings: list[Binding]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True, justify="right")
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(style="grey70")
    for b in bindings:
        grid.add_row(b.key_display or b.key.split(",")[0], b.description, b.tooltip)
    return grid


class HelpScreen(ModalScreen[None]):
    CSS_PATH = str(resources.files("mwtui.assets").joinpath("help.tcss"))
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "close", show=False),
    ]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.key_list = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(keys_table(self.key_list), id="help-keys")
            yield Static(Text(MOUSE_HELP, style="grey70"), id="help-mouse")

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "mwtui keys"
        box.border_subtitle = "esc closes"

    def on_click(self) -> None:
        self.dismiss()
