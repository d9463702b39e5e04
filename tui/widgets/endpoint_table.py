"""The endpoint table: one row per endpoint, updated in place from engine snapshots."""

from __future__ import annotations

from mwtui.engine.facade import EndpointStatus, Snapshot
from rich.text import Text
from textual.widgets import DataTable

GLYPHS = {
    "running": ("●", "green"),
    "starting": ("◐", "yellow"),
    "idle": ("○", "grey50"),
    "stopped": ("■", "grey50"),
    "failed": ("✖", "red"),
}
COLUMNS = (
    ("state", ""), ("name", "name"), ("kind", "kind"), ("url", "url"), ("repl", "repl"),
    ("rps", "req/s"), ("p50", "p50"), ("p95", "p95"), ("err", "err"), ("cpu", "cpu"), ("mem", "mem"),
)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}ms" if v >= 10 else f"{v:.1f}ms"


def _mem(n: int) -> str:
    return f"{n / 2**20:.0f}M" if n else "-"


def row_cells(e: EndpointStatus) -> list[Text | str]:
    glyph, colour = GLYPHS.get(e.state, ("?", "white"))
    kind = f"{e.spec.kind} {e.spec.method}" if e.spec.kind == "fastapi" else e.spec.kind
    url: Text | str = e.url
    if e.state == "failed" and e.last_error:
        url = Text(e.last_error.strip().splitlines()[0][:60], style="red")
    return [
        Text(glyph, style=colour),
        e.name,
        kind,
        url,
        f"{e.ready}/{e.desired}",
        f"{e.rps:.1f}",
        _ms(e.p50_ms),
        _ms(e.p95_ms),
        str(e.errors_total),
        f"{e.cpu_percent:.0f}%",
        _mem(e.rss_bytes),
    ]


class EndpointTable(DataTable[Text | str]):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, title in COLUMNS:
            self.add_column(title, key=key)

    def show(self, snap: Snapshot) -> None:
        names = [e.name for e in snap.endpoints]
        present = [str(k.value) for k in self.rows]
        if present != names:
            self.clear()
            for e in snap.endpoints:
                self.add_row(*row_cells(e), key=e.name)
            return
        for e in snap.endpoints:
            for (key, _), value in zip(COLUMNS, row_cells(e), strict=True):
                self.update_cell(e.name, key, value)

    @property
    def selected(self) -> str | None:
        if self.row_count == 0:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
