"""The endpoint table: one row per endpoint, cells updated in place, sortable, narrow-screen aware."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mwtui.engine.status import EndpointStatus, Snapshot
from rich.text import Text
from textual.widgets import DataTable

from . import format as fmt
from .sparkline import RateHistory, sparkline

SPARK_WIDTH = 10
STATE_ORDER = {"failed": 0, "starting": 1, "running": 2, "idle": 3, "stopped": 4}


@dataclass(frozen=True)
class Col:
    key: str
    title: str
    width: int | None  # None: as wide as the widest value in this app
    priority: int  # the highest numbers go first when the screen is narrow
    sort: Callable[[EndpointStatus], Any]
    descending: bool = False  # numbers sort largest first on the first click
    right: bool = False


COLUMNS: tuple[Col, ...] = (
    Col("state", "", 1, 0, lambda e: STATE_ORDER.get(e.state, 9)),
    Col("name", "name", None, 0, lambda e: e.name.lower()),
    Col("kind", "kind", None, 3, lambda e: fmt.kind(e.spec)),
    Col("url", "url", None, 2, lambda e: e.url),  # where to send requests: next after the basics
    Col("repl", "repl", 5, 1, lambda e: (e.ready, e.desired), True, True),
    Col("range", "min..max", 8, 7, lambda e: (e.spec.min_containers, e.cap[0] or 1 << 30), True),
    Col("rps", "req/s", SPARK_WIDTH + 7, 1, lambda e: e.rps, True),
    Col("p50", "p50", 6, 4, lambda e: e.p50_ms or 0.0, True, True),
    Col("p95", "p95", 6, 3, lambda e: e.p95_ms or 0.0, True, True),
    Col("err", "err", 5, 3, lambda e: e.errors_total, True, True),
    Col("cpu", "cpu", 5, 6, lambda e: e.cpu_percent, True, True),
    Col("mem", "mem", 5, 6, lambda e: e.memory_bytes, True, True),  # USS: what its replicas hold alone
)
BY_KEY = {c.key: c for c in COLUMNS}
SORTABLE = [c.key for c in COLUMNS]
URL_MAX = 48
ERROR_MAX = 60  # a failed row's error, in its URL or req/s cell
ERROR_EXTRA = 16  # at most this much wider the req/s column gets for it (a wider gap looks broken)


def cell(col: str, e: EndpointStatus, history: RateHistory, error_in: str = "rps") -> Text:
    """One cell. A failed endpoint's error replaces its URL, or its (zero) rate if the URL is hidden:
    a crash shows on its own row, where the eye already is."""
    s = e.spec
    if col == error_in and e.state == "failed" and e.last_error:
        return Text(fmt.first_line(e.last_error, ERROR_MAX), style="red")
    if col == "state":
        return fmt.glyph(e.state)
    if col == "name":
        style = "bold" if e.state == "running" else ""
        if e.variant_of:  # a parameter set: its values stand out, the class endpoint it belongs to does not
            return Text.assemble((e.variant_of, "grey50"), (e.name[len(e.variant_of):], style))
        return Text(e.name, style=style)
    if col == "kind":
        return Text(fmt.kind(s))
    if col == "url":
        if s.is_call:  # no URL: how it is reached instead
            return Text(fmt.reach(e), style="grey50")
        return Text(e.url, style="grey70" if e.state in ("stopped", "idle") else "")
    if col == "repl":
        return Text(f"{e.ready}/{e.desired}", justify="right", style="yellow" if e.ready < e.desired else "")
    if col == "range":
        return Text(fmt.range_text(e), justify="right")
    if col == "rps":
        return sparkline(history.series(e.name), SPARK_WIDTH, top=history.shared_top(SPARK_WIDTH)) + Text(f" {e.rps:6.1f}")
    if col == "p50":
        return Text(fmt.ms(e.p50_ms), justify="right")
    if col == "p95":
        return Text(fmt.ms(e.p95_ms), justify="right")
    if col == "err":
        return Text(str(e.errors_total), justify="right", style="red" if e.errors_total else "")
    if col == "cpu":
        return Text(fmt.cpu(e.cpu_percent), justify="right")
    if col == "mem":
        return Text(fmt.mem(e.memory_bytes), justify="right")
    raise KeyError(col)


def column_widths(snap: Snapshot) -> dict[str, int]:
    widths = {c.key: c.width or len(c.title) for c in COLUMNS}
    for e in snap.endpoints:
        widths["name"] = max(widths["name"], len(e.name))
        widths["kind"] = max(widths["kind"], len(fmt.kind(e.spec)))
        widths["url"] = min(URL_MAX, max(widths["url"], len(fmt.reach(e) if e.spec.is_call else e.url)))
    return widths


def fit_columns(widths: dict[str, int], available: int, padding: int = 1) -> list[str]:
    """The columns that fit in `available` cells: the most important first, then any smaller one that
    still fits (a long URL that does not fit leaves room for cpu and mem); shown in table order."""
    used, keep = 0, set()
    for c in sorted(COLUMNS, key=lambda c: (c.priority, COLUMNS.index(c))):
        need = widths[c.key] + 2 * padding
        if c.priority == 0 or used + need <= available:
            keep.add(c.key)
            used += need
    return [c.key for c in COLUMNS if c.key in keep]


def layout(snap: Snapshot, available: int) -> tuple[list[str], dict[str, int]]:
    """Columns and their widths: what fits; without a URL column, room left over goes to the req/s
    column, where a failed row's error is shown then."""
    widths = column_widths(snap)
    columns = fit_columns(widths, available)
    errors = [len(fmt.first_line(e.last_error, ERROR_MAX)) for e in snap.endpoints if e.state == "failed"]
    if errors and "rps" in columns and "url" not in columns:
        spare = available - sum(widths[k] + 2 for k in columns)
        widths["rps"] += max(0, min(spare, ERROR_EXTRA, max(errors) - widths["rps"]))
    return columns, widths


class EndpointTable(DataTable[Text]):
    """Rows keyed by endpoint name. `show()` is called once a second with a fresh snapshot."""

    def __init__(self, history: RateHistory, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)
        self.history = history
        self.snap: Snapshot | None = None
        self.sort_key: str | None = None
        self.sort_reverse = False
        self._columns: list[str] = []
        self._widths: dict[str, int] = {}
        self._names: list[str] = []
        self._cells: dict[tuple[str, str], Text] = {}

    # ----- data
    def show(self, snap: Snapshot) -> None:
        self.snap = snap
        names = [e.name for e in snap.endpoints]
        columns, widths = layout(snap, self._available_width())
        if names != self._names or columns != self._columns or widths != self._widths:
            self._rebuild(snap, columns, widths)
        else:
            for e in snap.endpoints:
                for col in columns:
                    value = cell(col, e, self.history, self._error_in)
                    if self._cells.get((e.name, col)) != value:  # only what changed: no needless repaint
                        self._cells[(e.name, col)] = value
                        self.update_cell(e.name, col, value)
        self._apply_sort()

    def _available_width(self) -> int:
        # Before the first layout the size is zero: assume a full 80-column terminal.
        width = self.size.width or 80
        return width - 1  # leave room for the vertical scrollbar

    @property
    def _error_in(self) -> str:
        return "url" if "url" in self._columns else "rps"

    def _rebuild(self, snap: Snapshot, columns: list[str], widths: dict[str, int]) -> None:
        selected = self.selected
        self._columns = columns
        self.clear(columns=True)
        self._cells.clear()
        for key in columns:
            col = BY_KEY[key]
            self.add_column(self._title(col), key=key, width=widths[key])
        for e in snap.endpoints:
            row = []
            for key in columns:
                value = cell(key, e, self.history, self._error_in)
                self._cells[(e.name, key)] = value
                row.append(value)
            self.add_row(*row, key=e.name)
        self._columns = columns
        self._widths = widths
        self._names = [e.name for e in snap.endpoints]
        self.select(selected)

    def _title(self, col: Col) -> Text:
        arrow = ""
        if col.key == self.sort_key:
            arrow = "▼" if self.sort_reverse else "▲"
        return Text(col.title + arrow, justify="right" if col.right else "left", style="bold")

    def on_resize(self) -> None:
        if self.snap is not None:
            self.show(self.snap)

    # ----- sorting
    def sort_by(self, key: str | None) -> None:
        """Sort by a column; the same column again reverses the order; None restores file order."""
        if key is not None and key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key = key
            self.sort_reverse = BY_KEY[key].descending if key else False
        if self.snap is not None:
            self._rebuild(self.snap, *layout(self.snap, self._available_width()))
            self._apply_sort()

    def cycle_sort(self) -> str | None:
        """The next sortable column (after the last: back to file order); returns its key."""
        order: list[str | None] = [None, *[k for k in SORTABLE if k != "state"], "state"]
        nxt = order[(order.index(self.sort_key) + 1) % len(order)]
        self.sort_key = None  # so that sort_by does not read it as "reverse"
        self.sort_by(nxt)
        return nxt

    def _apply_sort(self) -> None:
        if self.snap is None or not self.row_count:
            return
        selected = self.selected
        by_name = {e.name: e for e in self.snap.endpoints}
        if self.sort_key is None:
            order = {name: i for i, name in enumerate(self._names)}
            self.sort("name", key=lambda name: order[name.plain])
        else:
            value = BY_KEY[self.sort_key].sort
            tie = -1 if self.sort_reverse else 1
            self.sort(
                "name",
                # Ties keep file order, so rows with equal values do not swap places every second.
                key=lambda name: (value(by_name[name.plain]), tie * self._names.index(name.plain)),
                reverse=self.sort_reverse,
            )
        self.select(selected)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    # ----- selection
    @property
    def selected(self) -> str | None:
        if self.row_count == 0:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def select(self, name: str | None) -> None:
        if name is None or name not in self._names:
            return
        row = self.get_row_index(name)
        if row != self.cursor_row:
            self.move_cursor(row=row, animate=False)
