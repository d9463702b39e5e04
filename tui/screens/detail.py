"""Everything about one endpoint: its settings, every URL with a curl to copy, each replica, the last
error with its traceback. Refreshed by the app with every snapshot."""

from __future__ import annotations

from importlib import resources

from mwtui.engine.status import EndpointStatus
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Static

from ..widgets import format as fmt
from ..widgets.key_bar import KeyBar

REPLICA_COLUMNS = ("replica", "pid", "state", "gen", "age", "startup", "cpu", "mem")


def settings_table(e: EndpointStatus) -> Table:
    s = e.spec
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="grey70", no_wrap=True)
    grid.add_column()
    grid.add_column(style="grey70", no_wrap=True)
    grid.add_column()
    none = Text("-", style="grey50")

    def opt(v: object) -> Text | str:
        return none if v in (None, "", ()) else str(v)

    left = [
        ("kind", fmt.kind(s) + (" (web_endpoint, deprecated)" if s.deprecated_alias else "")),
        ("method", opt(s.method)),
        ("label", s.label),
        ("docs", "/docs" if s.docs else "off"),
        ("proxy auth", Text("required", style="yellow") if s.requires_proxy_auth else "off"),
        ("custom domains", opt(", ".join(s.custom_domains))),
        ("port", opt(s.port)),
        ("startup timeout", opt(f"{s.startup_timeout:g}s" if s.startup_timeout else None)),
        ("source", opt(s.source)),
    ]
    right = [
        ("pool", s.pool),
        ("min containers", str(s.min_containers)),
        ("max containers", fmt.max_text(e)),  # the cap in force: the app's, or mwtui's default
        ("buffer containers", str(s.buffer_containers)),
        ("scaledown window", f"{s.scaledown_window}s"),
        ("timeout", f"{s.timeout}s"),
        ("max inputs", str(s.max_inputs)),
        ("target inputs", str(s.target_inputs)),
        ("restarts", Text(str(e.restarts), style="yellow" if e.restarts else "")),
    ]
    for (k1, v1), (k2, v2) in zip(left, right, strict=True):
        grid.add_row(k1, v1, k2, v2)
    return grid


def title_text(e: EndpointStatus | None, name: str) -> Text:
    if e is None:
        return Text(f" {name} · gone (not in the app any more)", style="yellow")
    out = Text(" ")
    out.append_text(fmt.state_text(e.state))
    out.append(f"  {e.name}", style="bold")
    out.append(f" · {fmt.kind(e.spec)} · {e.ready}/{e.desired} replicas · {e.rps:.1f} req/s")
    out.append(f" · p50 {fmt.ms(e.p50_ms)} p95 {fmt.ms(e.p95_ms)} · {e.requests_total} requests")
    out.append(f" · {e.errors_total} errors", style="red" if e.errors_total else "")
    return out


def error_renderable(e: EndpointStatus) -> Group | Text:
    if not e.last_error:
        return Text("no error since start", style="grey50")
    lines = e.last_error.rstrip().splitlines()
    return Group(Text(lines[0], style="bold red"), Text("\n".join(lines[1:]), style="grey85"))


class DetailScreen(Screen[None]):
    CSS_PATH = str(resources.files("mwtui.assets").joinpath("detail.tcss"))
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("c", "copy_curl", "copy curl", tooltip="copy the curl line of the highlighted URL"),
    ]

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._urls: list[tuple[str, str, str]] = []
        self._replica_ids: list[str] | None = None
        self._built = False  # the app may call show() before on_mount has made the tables

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with VerticalScroll(id="detail-body"):
            yield Static(id="detail-settings", classes="section")
            yield DataTable(id="detail-urls", cursor_type="row", classes="section")
            yield DataTable(id="detail-replicas", cursor_type="row", classes="section")
            yield Static(id="detail-error", classes="section")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#detail-settings").border_title = "settings"
        urls = self.query_one("#detail-urls", DataTable)
        urls.border_title = "URLs · enter or c copies the curl line"
        urls.show_header = False
        urls.add_column("", key="what")
        urls.add_column("url and curl", key="url")
        replicas = self.query_one("#detail-replicas", DataTable)
        replicas.border_title = "replicas"
        for key in REPLICA_COLUMNS:
            replicas.add_column(key, key=key)
        self.query_one("#detail-error").border_title = "last error"
        urls.focus()
        self._built = True
        snap = getattr(self.app, "snap", None)
        if snap is not None:
            self.show(next((x for x in snap.endpoints if x.name == self.endpoint), None))

    def show(self, e: EndpointStatus | None) -> None:
        if not self._built:
            return
        self.query_one("#detail-title", Static).update(title_text(e, self.endpoint))
        if e is None:
            return
        self.query_one("#detail-settings", Static).update(settings_table(e))
        self._show_urls(e)
        self._show_replicas(e)
        error = self.query_one("#detail-error", Static)
        error.update(error_renderable(e))
        error.set_class(bool(e.last_error), "-error")

    def _show_urls(self, e: EndpointStatus) -> None:
        urls = fmt.endpoint_urls(e)
        if urls == self._urls:
            return
        self._urls = urls
        table = self.query_one("#detail-urls", DataTable)
        row = table.cursor_row
        table.clear()
        for what, url, curl in urls:
            # Two lines a row: the URL, then the curl line that `enter` copies.
            cell = Text.assemble((url, "bold"))
            if curl:
                cell.append(f"\n$ {curl}", style="cyan")
            table.add_row(Text(what, style="grey70"), cell, height=2)
        table.move_cursor(row=min(row, len(urls) - 1), animate=False)

    def _show_replicas(self, e: EndpointStatus) -> None:
        table = self.query_one("#detail-replicas", DataTable)
        ids = [r.id for r in e.replicas]
        rows = {
            r.id: (
                r.id, str(r.pid or "-"), _replica_state(r.state), str(r.generation), fmt.age(r.age_s),
                fmt.ms(r.startup_ms), fmt.cpu(r.cpu_percent), fmt.mem(r.memory_bytes),
            )
            for r in e.replicas
        }
        snap = e.snapshot or {}
        if snap.get("mode") == "snapshot" and snap.get("pid") and e.variant_of is None:
            # The process its replicas are forked from: its memory is the app's too.
            ids.append("snapshot")
            rows["snapshot"] = (
                Text("snapshot", style="grey70"), str(snap["pid"]), "forks", str(snap.get("generation", "")), "-",
                fmt.ms(snap.get("import_ms")), fmt.cpu(snap.get("cpu_percent", 0.0)), fmt.mem(snap.get("memory_bytes", 0)),
            )
        if ids != self._replica_ids:
            self._replica_ids = ids
            table.clear()
            for rid in ids:
                table.add_row(*rows[rid], key=rid)
            idle = "each set of class parameters has its own replicas: see its row" if e.parameters else "no replica now"
            table.border_subtitle = "" if ids else idle
            table.border_title = "replicas" + fmt.snapshot_text(e.snapshot)
            return
        table.border_title = "replicas" + fmt.snapshot_text(e.snapshot)
        for rid, values in rows.items():
            for key, value in zip(REPLICA_COLUMNS, values, strict=True):
                table.update_cell(rid, key, value, update_width=key == "state")  # "unresponsive" is long

    def action_copy_curl(self) -> None:
        table = self.query_one("#detail-urls", DataTable)
        if not self._urls:
            return
        what, _, curl = self._urls[min(table.cursor_row, len(self._urls) - 1)]
        self.app.copy_to_clipboard(curl)
        self.notify(curl, title=f"copied the curl line ({what})", timeout=4)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "detail-urls":
            event.stop()
            self.action_copy_curl()


def _replica_state(state: str) -> Text:
    # A blocked event loop (no heartbeat for a few seconds) is the one state to catch the eye here.
    return Text(state, style="bold yellow" if state == "unresponsive" else "")
