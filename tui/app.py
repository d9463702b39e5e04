"""The terminal app: the engine's endpoints live, driven from the keyboard."""

from __future__ import annotations

import contextlib
from importlib import resources

from mwtui.engine.facade import Engine, GatewayError, LoadFailed
from mwtui.engine.loader import AppRef
from mwtui.engine.supervisor import Event, LogLine
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, RichLog, Static

from .widgets.endpoint_table import EndpointTable


class MwtuiApp(App[int]):
    CSS_PATH = str(resources.files("mwtui.assets").joinpath("mwtui.tcss"))
    TITLE = "mwtui"
    BINDINGS = [
        Binding("s", "start", "start"),
        Binding("x", "stop", "stop"),
        Binding("r", "restart", "restart"),
        Binding("plus,equals_sign", "scale(1)", "+replica", key_display="+"),
        Binding("minus", "scale(-1)", "-replica", key_display="-"),
        Binding("l", "toggle_logs", "logs"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield EndpointTable(id="endpoints")
        yield Static(id="detail")
        yield RichLog(id="logs", max_lines=2000, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#header", Static).update(f" mwtui  {self.engine.ref.path} · starting…")
        self.engine.subscribe(self._on_engine_event)
        self.start_engine()
        self.set_interval(1.0, self.refresh_view)

    @work(exclusive=True, group="engine")
    async def start_engine(self) -> None:
        try:
            await self.engine.start()
        except (LoadFailed, GatewayError) as e:
            message = e.error.message if isinstance(e, LoadFailed) else str(e)
            self.query_one("#detail", Static).update(f"[red]{message}[/]")
            return
        self.refresh_view()

    def refresh_view(self) -> None:
        snap = self.engine.snapshot()
        ready = sum(1 for e in snap.endpoints if e.state == "running")
        self.query_one("#header", Static).update(
            f" [b]mwtui[/]  {snap.app_name} · gateway {snap.gateway_url} · {len(snap.endpoints)} endpoints "
            f"({ready} running) · {snap.total_rps:.1f} req/s"
        )
        table = self.query_one(EndpointTable)
        table.show(snap)
        name = table.selected
        e = next((x for x in snap.endpoints if x.name == name), None)
        if e is not None:
            s = e.spec
            extra = f" · own port {e.own_url}" if e.own_url else ""
            domains = f" · domains {', '.join(s.custom_domains)}" if s.custom_domains else ""
            self.query_one("#detail", Static).update(
                f" {e.name} · {e.state} · {e.ready}/{e.desired} replicas · restarts {e.restarts}{extra}{domains}\n"
                f" curl {e.url}/"
            )

    def _on_engine_event(self, ev: Event) -> None:
        if isinstance(ev, LogLine):
            self.query_one("#logs", RichLog).write(f"{ev.replica:<16} {ev.text}")

    def _selected(self) -> str | None:
        return self.query_one(EndpointTable).selected

    def action_start(self) -> None:
        if name := self._selected():
            self.engine.start_endpoint(name)

    def action_stop(self) -> None:
        if name := self._selected():
            self.engine.stop_endpoint(name)

    @work(group="commands")
    async def action_restart(self) -> None:
        if name := self._selected():
            await self.engine.restart_endpoint(name)

    def action_scale(self, delta: int) -> None:
        if name := self._selected():
            e = next(x for x in self.engine.snapshot().endpoints if x.name == name)
            self.engine.scale(name, e.desired + delta)

    def action_toggle_logs(self) -> None:
        logs = self.query_one("#logs", RichLog)
        logs.display = not logs.display

    async def action_quit(self) -> None:
        self.query_one("#header", Static).update(" mwtui  stopping: draining in-flight requests…")
        self.exit(0)

    async def on_unmount(self) -> None:
        # However the app ends, replicas drain and stop here; if mwtui itself is killed, the
        # lifeline takes them down instead.
        with contextlib.suppress(Exception):
            await self.engine.close()


def run_tui(ref: AppRef, host: str, port: int, *, own_ports: bool = True) -> int:
    app = MwtuiApp(Engine(ref, host=host, port=port, own_ports=own_ports))
    app.run()
    return app.return_code or 0
