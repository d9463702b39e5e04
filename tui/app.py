"""The terminal app: the engine's endpoints live, driven from the keyboard and the mouse.

The app never awaits the engine on its own message loop: starting, restarting and closing run in
workers; everything else reads `snapshot()` once a second (and soon after a pool changes) and turns it
into cells, lines and notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import webbrowser
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mwtui.engine.events import Event, LogLine, PoolChanged
from mwtui.engine.facade import AppRef, Engine, GatewayError, LoadFailed
from mwtui.engine.status import CAP_DEFAULT, CAP_WEB_SERVER, EndpointStatus, Snapshot
from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable

from .messages import CommandDone, EngineFailed, EngineReady, FilterClosed
from .screens.detail import DetailScreen
from .screens.help import HelpScreen
from .screens.inspector import InspectorScreen
from .screens.request_detail import RequestDetailScreen
from .widgets import format as fmt
from .widgets.app_header import AppHeader
from .widgets.endpoint_summary import EndpointSummary
from .widgets.endpoint_table import BY_KEY, EndpointTable
from .widgets.key_bar import KeyBar
from .widgets.load_error import LoadErrorPanel
from .widgets.log_pane import ENGINE_POOL, LogPane
from .widgets.reload_banner import ReloadBanner
from .widgets.sparkline import RateHistory

W = TypeVar("W", bound=Widget)


class EngineLike(Protocol):
    """What the screen uses of `Engine`; tests hand in a fixed stand-in for the snapshot pictures."""

    ref: AppRef

    def log_lines(self, pool: str, with_engine: bool = ...) -> list[LogLine]: ...
    async def start(self) -> Snapshot: ...
    async def close(self) -> None: ...
    def snapshot(self) -> Snapshot: ...
    def subscribe(self, listener: Callable[[Event], None]) -> None: ...
    def start_endpoint(self, name: str) -> None: ...
    def stop_endpoint(self, name: str) -> None: ...
    async def restart_endpoint(self, name: str) -> str | None: ...
    async def reload(self, reason: str = ...) -> bool: ...
    def scale(self, name: str, replicas: int) -> int: ...
    def unpin(self, name: str) -> None: ...
    async def requests(self, endpoint: str | None = ..., limit: int = ...) -> list[dict[str, Any]]: ...
    async def replay_request(self, request_id: int) -> dict[str, Any]: ...
    def run_function(self, name: str) -> None: ...


# Actions that act on the selected endpoint: they need a started engine and a row.
ENDPOINT_ACTIONS = {"start", "stop", "restart", "scale", "autoscale", "open", "copy_url", "details"}
# Actions about the main screen's table and logs: hidden on the detail screen.
MAIN_ONLY = {"toggle_logs", "filter", "follow", "copy_log", "save_log", "sort", "details"}


def crash_notices(prev: Snapshot | None, snap: Snapshot) -> list[tuple[str, str]]:
    """(message, severity) for each pool that failed or restarted since `prev`: one per pool, since a
    class's endpoints share their replicas."""
    if prev is None:
        return []
    before = {e.spec.pool: e for e in prev.endpoints}
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for e in snap.endpoints:
        pool = e.spec.pool
        if pool in seen or pool not in before:
            continue
        seen.add(pool)
        old = before[pool]
        why = fmt.first_line(e.last_error, 120)
        if e.state == "failed" and old.state != "failed":
            out.append((f"{pool} failed and is not restarting; s starts it again. {why}".strip(), "error"))
        elif e.restarts > old.restarts:
            out.append((f"{pool} crashed and was restarted (restart {e.restarts}). {why}".strip(), "warning"))
    return out


def open_in_browser(url: str) -> str | None:
    """Open `url`; None on success, else what went wrong. A browser that runs in the terminal (lynx,
    w3m: what webbrowser picks without a display) would fight the screen for it, so it is not used."""
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return "no browser found"
    if type(browser) is webbrowser.GenericBrowser:
        return f"the only browser here ({browser.name}) runs in this terminal"
    return None if browser.open(url) else "the browser did not open"


class MwtuiApp(App[int]):
    CSS_PATH = str(resources.files("mwtui.assets").joinpath("mwtui.tcss"))
    TITLE = "mwtui"
    BINDINGS = [
        Binding("s", "start", "start", tooltip="start the selected endpoint's pool again (after x, or after it failed)"),
        Binding("x", "stop", "stop", tooltip="stop its pool's replicas; in-flight requests finish first, new ones get 503"),
        Binding("r", "restart", "restart", tooltip="rolling restart: each new replica replaces an old one once ready"),
        Binding("plus,equals_sign", "scale(1)", "more", key_display="+",
                tooltip="pin one more replica (the autoscaler stands aside until a)"),
        Binding("minus", "scale(-1)", "fewer", key_display="-",
                tooltip="pin one replica fewer (at 0 requests wait, then get 503, until a)"),
        Binding("a", "autoscale", "auto", tooltip="hand the pool back to the autoscaler (after + or -)"),
        Binding("R", "reload", "reload", key_display="R", tooltip="load the app files again and roll every pool"),
        Binding("n", "run_now", "run now", tooltip="run the selected function once now, with no arguments"),
        Binding("i", "inspect", "inspect", tooltip="the requests through the gateway: headers, bodies, timings, replay"),
        Binding("o", "open", "open", tooltip="open the label URL in a browser (a function has none)"),
        Binding("c", "copy_url", "copy", tooltip="copy the label URL to the clipboard"),
        Binding("l", "toggle_logs", "logs", tooltip="show or hide the logs of the selected endpoint"),
        # Priority: handled before the key reaches the table, so that what is typed right after it
        # (or pasted with it) lands in the filter box instead of on the keys above.
        Binding("slash", "filter", "filter", key_display="/", priority=True, tooltip="filter the logs (esc clears)"),
        Binding("f", "follow", "follow", show=False, tooltip="follow the end of the logs, or pause there"),
        Binding("y", "copy_log", "copy log", show=False, tooltip="copy the log lines shown to the clipboard"),
        Binding("w", "save_log", "save log", show=False, tooltip="write the log lines shown to a file"),
        Binding("S", "sort", "sort", key_display="S", show=False, tooltip="sort by the next column (or click one)"),
        Binding("enter", "details", "details", show=False, tooltip="settings, URLs, replicas, last error"),
        Binding("question_mark", "help", "help", key_display="?", tooltip="this list"),
        Binding("q", "quit", "quit", tooltip="drain and stop every replica, then leave"),
    ]

    def __init__(self, engine: EngineLike, *, tick: float | None = 1.0, log_dir: Path | None = None) -> None:
        """`tick`: seconds between snapshots; None takes one at start only (tests use it for fixed
        pictures). `log_dir`: where `w` writes logs (default: the current directory)."""
        super().__init__()
        self.engine = engine
        self.tick_s = tick
        self.log_dir = log_dir
        self.rate_history = RateHistory()
        self.snap: Snapshot | None = None
        self.engine_ready = False
        self.engine_closing = False
        self.engine_failed = False
        self._notice_prev: Snapshot | None = None
        self._pending_logs: list[LogLine] = []
        self._flush_scheduled = False
        self._refresh_scheduled = False
        self._leaving = False
        self._ticker: Timer | None = None

    # ----- layout
    def compose(self) -> ComposeResult:
        yield AppHeader(self.engine.ref.path, id="header")
        yield LoadErrorPanel(id="load-error")
        yield ReloadBanner(id="reload-error")
        yield EndpointTable(self.rate_history, id="endpoints")
        yield EndpointSummary(id="summary")
        yield LogPane(self._log_source, id="logs")
        yield KeyBar()

    def on_mount(self) -> None:
        self.main(LoadErrorPanel).display = False
        self.main(ReloadBanner).display = False
        self.main(AppHeader).show(None, self.engine.ref.path)
        self.main(EndpointTable).focus()
        self.engine.subscribe(self._on_engine_event)
        self.start_engine()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # A polite kill leaves as `q` does; a terminal that went away (its window closed, `tmux
            # kill-server`) too, but without drawing on it. Either way replicas drain and temporary
            # folders go (SIGKILL is the lifeline's job).
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._hang_up()))
        if self.tick_s:
            self._ticker = self.set_interval(self.tick_s, self._on_tick)

    def main(self, cls: type[W]) -> W:
        """A widget of the main screen, whichever screen is on top (App.query_one searches only that)."""
        return self.screen_stack[0].query_one(cls)

    @property
    def _gone(self) -> bool:
        # Leaving: widgets are being removed while the engine drains; its events must not touch them.
        return self._leaving or not self.is_running or not self.screen_stack

    @property
    def table(self) -> EndpointTable:
        return self.main(EndpointTable)

    @property
    def log_pane(self) -> LogPane:
        return self.main(LogPane)

    # ----- engine lifecycle
    @work(exclusive=True, group="engine", exit_on_error=False)
    async def start_engine(self) -> None:
        try:
            await self.engine.start()
        except LoadFailed as e:
            self.post_message(EngineFailed(f"{Path(self.engine.ref.path).name} did not load", e.error))
        except GatewayError as e:
            self.post_message(EngineFailed("the gateway did not start", str(e)))
        except Exception as e:  # anything else still belongs on screen, not in a crashed terminal
            self.post_message(EngineFailed("mwtui could not start", f"{type(e).__name__}: {e}"))
        else:
            self.post_message(EngineReady())

    def on_engine_ready(self, _: EngineReady) -> None:
        self.engine_ready = True
        self._take_snapshot()
        self.refresh_bindings()

    def on_engine_failed(self, msg: EngineFailed) -> None:
        self.engine_failed = True
        for widget in (self.table, self.main(EndpointSummary), self.log_pane):
            widget.display = False
        self.main(LoadErrorPanel).show(msg.title, msg.error)
        self.main(AppHeader).show(None, self.engine.ref.path, "did not start")
        self.refresh_bindings()

    def _on_tick(self) -> None:
        if self.engine_ready and not self.engine_closing:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        snap = self.engine.snapshot()
        self.rate_history.record(snap)  # once a second: the sparkline's time axis
        self.show_snapshot(snap)

    def show_snapshot(self, snap: Snapshot) -> None:
        """Put a snapshot on screen: header, table cells, summary, logs' pool, details, notices."""
        if self._gone:
            return
        self.snap = snap
        self.main(AppHeader).show(snap, self.engine.ref.path, "stopping…" if self.engine_closing else None)
        self.main(ReloadBanner).show(snap.error, serving=bool(snap.endpoints))
        self.table.show(snap)
        current = self.current()
        self.main(EndpointSummary).show(current)
        self.log_pane.show_pool(current.spec.pool if current else None)
        for screen in self.screen_stack:
            if isinstance(screen, DetailScreen):
                screen.show(self._status(screen.endpoint))
        prev_error = self._notice_prev.error if self._notice_prev else None
        if snap.error is not None and snap.error != prev_error:
            self.notify(fmt.first_line(snap.error.message, 200), title="the edit does not load", severity="error")
        for text, severity in crash_notices(self._notice_prev, snap):
            self.notify(text, severity=severity, timeout=8)  # type: ignore[arg-type]
        self._notice_prev = snap

    def _on_engine_event(self, ev: Event) -> None:
        # Called by the engine on this loop, possibly many times a second: only queue and coalesce.
        if self._gone:
            return
        if isinstance(ev, LogLine):
            if ev.pool in (self.log_pane.pool, ENGINE_POOL):
                self._pending_logs.append(ev)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.set_timer(0.1, self._flush_logs)
        elif isinstance(ev, PoolChanged) and not self._refresh_scheduled:
            self._refresh_scheduled = True
            self.set_timer(0.1, self._refresh_soon)

    def _flush_logs(self) -> None:
        self._flush_scheduled = False
        if self._gone:
            return
        lines, self._pending_logs = self._pending_logs, []
        self.log_pane.append(lines)

    def _refresh_soon(self) -> None:
        # A state change shows at once, without waiting for the tick (and without a history sample).
        self._refresh_scheduled = False
        if self.engine_ready and not self.engine_closing:
            self.show_snapshot(self.engine.snapshot())

    def _log_source(self, pool: str) -> Iterable[LogLine]:
        self._pending_logs = []  # they are in the engine's buffer already
        return self.engine.log_lines(pool)

    # ----- selection
    def _status(self, name: str | None) -> EndpointStatus | None:
        if self.snap is None or name is None:
            return None
        return next((e for e in self.snap.endpoints if e.name == name), None)

    def detail_screen(self) -> DetailScreen | None:
        """The endpoint's details, if open (even under the help screen): keys then act on it."""
        return next((s for s in reversed(self.screen_stack) if isinstance(s, DetailScreen)), None)

    def selected_name(self) -> str | None:
        if detail := self.detail_screen():
            return detail.endpoint
        return self.table.selected

    def current(self) -> EndpointStatus | None:
        return self._status(self.selected_name())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is not self.table or self.snap is None:
            return
        current = self.current()
        self.main(EndpointSummary).show(current)
        self.log_pane.show_pool(current.spec.pool if current else None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is self.table:
            self.action_details()

    def on_filter_closed(self, _: FilterClosed) -> None:
        self.table.focus()

    def on_command_done(self, msg: CommandDone) -> None:
        self.notify(msg.text, severity=msg.severity, timeout=5)  # type: ignore[arg-type]

    # ----- what is allowed where
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_ONLY and self.detail_screen() is not None:
            return False
        if action in ENDPOINT_ACTIONS | MAIN_ONLY | {"reload", "run_now", "inspect"} and isinstance(
                self.screen, (InspectorScreen, RequestDetailScreen)):
            return False  # the inspector's own keys (r, c, a, /) mean other things there
        if action in ENDPOINT_ACTIONS | {"reload", "filter", "toggle_logs", "follow", "copy_log", "save_log", "sort",
                                         "run_now", "inspect"}:
            if self.engine_failed:
                return False  # nothing to act on: only help and quit stay in the footer
            return True if self.engine_ready and not self.engine_closing else None
        return True

    def _need(self) -> EndpointStatus | None:
        """The selected endpoint as the engine has it now: keys pressed faster than the once-a-second
        refresh (+ + +) must each build on the one before, not on the picture on screen."""
        if not self.engine_ready or self.engine_closing:
            return None
        name = self.selected_name()
        e = next((x for x in self.engine.snapshot().endpoints if x.name == name), None)
        if e is None:
            self.notify("no endpoint selected", severity="warning")
        return e

    # ----- endpoint commands
    def action_start(self) -> None:
        if e := self._need():
            self.engine.start_endpoint(e.name)
            self.notify(f"starting {e.spec.pool}", timeout=2)

    def action_stop(self) -> None:
        if e := self._need():
            self.engine.stop_endpoint(e.name)
            self.notify(f"stopping {e.spec.pool}: in-flight requests finish first", timeout=3)

    def action_restart(self) -> None:
        if e := self._need():
            self.notify(f"restarting {e.spec.pool}: one replica at a time", timeout=3)
            self._restart(e.name, e.spec.pool)

    @work(group="commands", exit_on_error=False)
    async def _restart(self, name: str, pool: str) -> None:
        try:
            await self.engine.restart_endpoint(name)
        except Exception as err:
            self.post_message(CommandDone(f"restart of {pool} failed: {err}", "error"))
        else:
            self.post_message(CommandDone(f"{pool} restarted"))

    def action_scale(self, delta: int) -> None:
        e = self._need()
        if e is None:
            return
        s = e.spec
        if e.state == "stopped":
            self.notify(f"{s.pool} is stopped: s starts it", severity="warning")
            return
        want = max(0, e.desired + delta)
        top, source = e.cap
        if top is not None and want > top:
            if source == CAP_DEFAULT:
                self.notify(f"{s.pool}: at most {top} replicas (mwtui's default; --max-replicas raises it)",
                            severity="warning")
            elif source == CAP_WEB_SERVER:  # no network of its own: see /api/app's network_why
                self.notify(f"{s.pool} listens on fixed port {s.port} of the host's network: one replica only",
                            severity="warning")
            else:
                self.notify(f"{s.pool}: max_containers is {top}", severity="warning")
            return
        if want == e.desired:
            return
        self.engine.scale(e.name, want)
        self.notify(f"{s.pool}: pinned to {want} replica{'s' if want != 1 else ''} (a: back to auto)", timeout=3)

    def action_autoscale(self) -> None:
        if e := self._need():
            self.engine.unpin(e.name)
            self.notify(f"{e.spec.pool}: back to autoscaling", timeout=3)

    def action_reload(self) -> None:
        if not self.engine_ready or self.engine_closing:
            return
        if getattr(self.engine, "reload", None) is None:
            self.notify("reload comes with the reloader", severity="warning")
            return
        self.notify("reloading the app file…", timeout=2)
        self._reload()

    @work(group="reload", exclusive=True, exit_on_error=False)
    async def _reload(self) -> None:
        try:
            ok = await self.engine.reload("R pressed")
        except Exception as err:
            self.post_message(CommandDone(f"reload failed: {err}", "error"))
            return
        if ok:
            self.post_message(CommandDone(f"reloaded (generation {self.engine.snapshot().reload.generation})"))
        else:
            self.post_message(CommandDone("reload incomplete: the previous version keeps serving (see logs)", "warning"))

    def action_inspect(self) -> None:
        if not self.engine_ready:
            return
        self.push_screen(InspectorScreen(self.selected_name()))  # None: every endpoint

    def action_run_now(self) -> None:
        if not (e := self._need()):
            return
        if e.spec.kind != "function":
            self.notify(f"{e.name} is not a function: n runs a function once", severity="warning")
            return
        self.engine.run_function(e.name)
        self.notify(f"{e.name}: running once now (see its log)", timeout=3)

    def _no_url(self, e: EndpointStatus) -> bool:
        if e.spec.is_call:
            self.notify(f"{e.name} has no URL: the app's code calls it (.remote(), .spawn(), .map())",
                        severity="warning")
        return e.spec.is_call

    def action_open(self) -> None:
        if (e := self._need()) and not self._no_url(e):
            self.notify(f"opening {e.url}", timeout=3)
            self._open_url(e.url)

    @work(thread=True, group="browser", exit_on_error=False)
    def _open_url(self, url: str) -> None:
        # webbrowser may start a browser process and wait for it: never on the UI loop.
        if problem := open_in_browser(url):
            self.post_message(CommandDone(f"{problem}; c copies the URL", "warning"))

    def action_copy_url(self) -> None:
        if (e := self._need()) and not self._no_url(e):
            self.copy_to_clipboard(e.url)
            self.notify(e.url, title="copied", timeout=3)

    def action_details(self) -> None:
        if self.detail_screen() is not None:
            return
        if e := self._need():
            self.push_screen(DetailScreen(e.name))

    # ----- logs and table
    def action_toggle_logs(self) -> None:
        logs = self.log_pane
        logs.display = not logs.display
        self.table.set_class(not logs.display, "-alone")

    def action_filter(self) -> None:
        box = self.log_pane.filter_box
        if self.focused is box:
            # A `/` typed into the filter itself ("GET /items"): queue it behind the keys before it.
            box.post_message(events.Key("slash", "/"))
            return
        if not self.log_pane.display:
            self.action_toggle_logs()
        self.log_pane.open_filter()

    def action_follow(self) -> None:
        on = self.log_pane.toggle_follow()
        self.notify("logs follow the end" if on else "logs paused: f follows again", timeout=2)

    def action_copy_log(self) -> None:
        text = self.log_pane.text()
        self.copy_to_clipboard(text)
        n = len(self.log_pane.shown)
        self.notify(f"copied {n} log line{'s' if n != 1 else ''} of {self.log_pane.pool}", timeout=3)

    def action_save_log(self) -> None:
        if self.log_pane.pool is None:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = (self.log_dir or Path.cwd()) / f"mwtui-{self.log_pane.pool}-{stamp}.log"
        self._save_log(path, self.log_pane.text())

    @work(thread=True, group="save", exit_on_error=False)
    def _save_log(self, path: Path, text: str) -> None:
        try:
            path.write_text(text)
        except OSError as e:
            self.post_message(CommandDone(f"could not write {path}: {e}", "error"))
        else:
            self.post_message(CommandDone(f"saved the logs to {path}"))

    def action_sort(self) -> None:
        key = self.table.cycle_sort()
        title = BY_KEY[key].title or key if key else "file order"
        self.notify(f"sorted by {title}", timeout=2)

    def action_clear_filter(self) -> None:
        self.log_pane.action_clear_filter()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self._all_bindings()))

    def _all_bindings(self) -> list[Binding]:
        out = [b for b in self.BINDINGS if isinstance(b, Binding)]
        return [*out, *(b for b in DetailScreen.BINDINGS if isinstance(b, Binding) and b.action == "copy_curl")]

    def get_system_commands(self, screen: Screen) -> Iterator[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in self.BINDINGS:
            if isinstance(b, Binding) and b.action != "quit":
                yield SystemCommand(
                    b.description.capitalize(), f"{b.tooltip} ({b.key_display or b.key})", partial(self.run_action, b.action)
                )

    # ----- leaving
    async def action_quit(self) -> None:
        if self.engine_closing:
            return
        self.engine_closing = True
        self.refresh_bindings()
        self.main(AppHeader).show(self.snap, self.engine.ref.path, "stopping: draining in-flight requests…")
        self._drain_and_exit()

    async def _hang_up(self) -> None:
        """The terminal is gone: close the engine, then leave at once. Textual's last writes to a
        terminal that no longer reads would block its exit for good."""
        self.engine_closing = True
        with contextlib.suppress(Exception):
            await self.engine.close()
        os._exit(129)  # 128 + SIGHUP, as a shell reports it

    @work(group="shutdown", exit_on_error=False)
    async def _drain_and_exit(self) -> None:
        self.workers.cancel_group(self, "engine")  # a start still in progress must not spawn more
        with contextlib.suppress(Exception):
            await self.engine.close()
        self.exit(0)

    async def on_unmount(self) -> None:
        # However the app ends, replicas drain and stop here (close is idempotent); if mwtui itself is
        # killed, the lifeline takes them down instead.
        self._leaving = True
        if self._ticker is not None:
            self._ticker.stop()
        with contextlib.suppress(Exception):
            await self.engine.close()


def run_tui(ref: AppRef | Sequence[AppRef], options: Mapping[str, Any] | None = None) -> int:
    """`options`: the Engine's keyword arguments (host, port, own_ports, reload, watch_rules)."""
    app = MwtuiApp(Engine(ref, **dict(options or {})))
    app.run()
    return app.return_code or 0
