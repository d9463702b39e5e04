"""The terminal app. Pilot tests drive a real Engine (real replicas, real gateway, on loopback) and check
the engine's state after every key, not only the screen; snapshot tests draw a fixed, hand-built
Snapshot (no process, no clock) at 80x24 and 160x45, since there the screen is what is under test."""

from __future__ import annotations

import os
import signal
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_textual_snapshot
from mwtui.engine.facade import EndpointStatus, Engine, ReloadStatus, Snapshot
from mwtui.engine.loader import AppRef
from mwtui.tui.app import MwtuiApp, crash_notices
from mwtui.tui.screens.detail import DetailScreen
from mwtui.tui.screens.help import HelpScreen
from mwtui.tui.widgets import format as fmt
from mwtui.tui.widgets.endpoint_summary import EndpointSummary
from mwtui.tui.widgets.endpoint_table import EndpointTable, column_widths, fit_columns
from mwtui.tui.widgets.load_error import LoadErrorPanel
from mwtui.tui.widgets.sparkline import RateHistory, sparkline
from textual import events
from textual.pilot import Pilot

from .eventually import eventually_async
from .fixtures import tui_frozen as frozen

FIXTURES = Path(__file__).parent / "fixtures"
APP = str(FIXTURES / "tui_app.py")
SIZE = (120, 35)


# ----------------------------------------------------------------------------- helpers
async def until(pilot: Pilot[Any], cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Let the app run until `cond()` holds; the engine lives on the same loop, so never block it."""

    def described() -> str:  # the engine's state as of the timeout, which `cond` alone does not show
        app = pilot.app
        state = ""
        if isinstance(app, MwtuiApp) and app.engine_ready:
            state = "\n".join(
                f"  {e.name}: {e.state} ready={e.ready} starting={e.starting} desired={e.desired} "
                f"replicas={[(r.id, r.pid, r.state) for r in e.replicas]} last_error={(e.last_error or '')[-300:]!r}"
                for e in app.engine.snapshot().endpoints
            )
        return f"{what}; the engine:\n{state}"

    await eventually_async(cond, timeout, described, pause=lambda: pilot.pause(0.05))


def status(app: MwtuiApp, name: str) -> EndpointStatus:
    return next(e for e in app.engine.snapshot().endpoints if e.name == name)


def pids(app: MwtuiApp, name: str) -> set[int]:
    return {r.pid for r in status(app, name).replicas if r.pid}


def all_running(app: MwtuiApp) -> bool:
    snap = app.engine.snapshot()
    return bool(snap.endpoints) and all(e.state == "running" for e in snap.endpoints)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_app(tmp_path: Path, *, own_ports: bool = False, app_file: str = APP) -> MwtuiApp:
    engine = Engine(AppRef.parse(app_file), port=0, own_ports=own_ports, reload=False)
    return MwtuiApp(engine, log_dir=tmp_path)


async def started(pilot: Pilot[Any]) -> MwtuiApp:
    app = pilot.app
    assert isinstance(app, MwtuiApp)
    await until(pilot, lambda: app.engine_ready and all_running(app), "every endpoint running", 60)
    await until(pilot, lambda: app.table.row_count == 4, "the table's rows")
    return app


def record_notices(app: MwtuiApp) -> list[str]:
    seen: list[str] = []
    original = app.notify

    def notify(message: str, **kw: Any) -> None:
        seen.append(f"{kw.get('title') or ''} {message}".strip())
        original(message, **kw)

    app.notify = notify  # type: ignore[method-assign]
    return seen


def header_x(table: EndpointTable, key: str) -> int:
    """Where to click on a column's header."""
    x = 0
    for col_key, col in table.columns.items():
        if col_key.value == key:
            return x + 1
        x += col.get_render_width(table)
    raise KeyError(key)


def row_order(table: EndpointTable) -> list[str]:
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


# ----------------------------------------------------------------------------- keys against a real engine
async def test_x_stops_and_s_starts_the_selected_endpoint(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.table.selected == "hello"
        before = pids(app, "hello")
        await pilot.press("x")
        await until(pilot, lambda: status(app, "hello").state == "stopped" and not pids(app, "hello"), "stopped")
        assert not any(alive(p) for p in before)
        assert status(app, "echo").state == "running"  # only the selected one
        await until(pilot, lambda: app.table.get_cell("hello", "state").plain == "■", "the stopped glyph")
        await pilot.press("s")
        await until(pilot, lambda: status(app, "hello").state == "running", "running again")
        await until(pilot, lambda: app.table.get_cell("hello", "state").plain == "●", "the running glyph")


async def test_plus_minus_pin_replicas_and_a_goes_back(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        notices = record_notices(app)
        await pilot.press("down")
        assert app.table.selected == "echo"
        await pilot.press("plus")
        await until(pilot, lambda: status(app, "echo").desired == 2 and status(app, "echo").ready == 2, "2 ready")
        await pilot.press("equals_sign")  # `=` is `+` without shift
        await until(pilot, lambda: status(app, "echo").ready == 3, "3 ready")
        await pilot.press("plus")  # echo has max_containers=3
        await pilot.pause(0.2)
        assert status(app, "echo").desired == 3
        assert any("max_containers is 3" in n for n in notices)
        await pilot.press("minus")
        await until(pilot, lambda: status(app, "echo").desired == 2 and len(pids(app, "echo")) == 2, "2 left")
        await until(pilot, lambda: app.table.get_cell("echo", "repl").plain == "2/2", "2/2 on screen")
        await pilot.press("a")
        await until(pilot, lambda: status(app, "echo").pinned is None, "back to autoscaling")
        assert any("back to autoscaling" in n for n in notices)
        assert status(app, "hello").desired == 1  # the others untouched


async def test_r_restarts_with_new_replica_pids(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        notices = record_notices(app)
        old = pids(app, "hello")
        await pilot.press("r")
        await until(
            pilot,
            lambda: status(app, "hello").ready == 1 and pids(app, "hello") and not pids(app, "hello") & old,
            "a new replica",
        )
        await until(pilot, lambda: not any(alive(p) for p in old), "the old replica gone")
        await until(pilot, lambda: any("hello restarted" in n for n in notices), "the restarted notice")
        assert status(app, "hello").state == "running"


async def test_clicking_a_class_row_selects_it_and_x_stops_its_pool(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        row = app.table.get_row_index("Pair.value")
        await pilot.click(EndpointTable, offset=(20, row + 1))  # +1: the header row
        assert app.table.selected == "Pair.value"
        assert app.log_pane.pool == "Pair"
        await pilot.press("x")
        # One class, one pool: both of its endpoints stop.
        await until(pilot, lambda: status(app, "Pair.bump").state == "stopped", "Pair stopped")
        assert status(app, "Pair.value").state == "stopped"
        await pilot.press("s")
        await until(pilot, lambda: status(app, "Pair.bump").state == "running", "Pair running")


async def test_parameter_sets_have_rows_under_their_class_endpoint_and_x_there_stops_them_all(tmp_path: Path) -> None:
    app = make_app(tmp_path, app_file=str(FIXTURES / "api_params.py"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.engine_ready and app.table.row_count == 1, "the class endpoint's row")
        port = app.engine.gateway.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            host = {"host": "api-params-greeter-greet.localhost"}
            for query in ("name=ann", "name=bo&times=2"):
                r = await c.get(f"/?{query}", headers=host)
                assert r.status_code == 200, r.text
        ann, bo = "Greeter.greet?name=ann&times=1&loud=false&tag=t", "Greeter.greet?name=bo&times=2&loud=false&tag=t"
        await until(pilot, lambda: row_order(app.table) == ["Greeter.greet", ann, bo], "a row per set, in order")
        assert app.table.get_cell(ann, "name").plain == ann
        assert "class parameters name, times, loud, tag" in str(app.main(EndpointSummary).render())
        await pilot.press("x")  # on the class endpoint's row: every set stops
        await until(pilot, lambda: status(app, ann).state == "stopped" and status(app, bo).state == "stopped",
                    "both sets stopped")
        assert status(app, "Greeter.greet").state == "stopped"
        await pilot.press("s")
        await until(pilot, lambda: status(app, ann).state == "running" and status(app, bo).state == "running",
                    "both sets running again")


async def test_c_copies_the_url_and_o_opens_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    class Browser(webbrowser.BaseBrowser):  # a graphical one, as on a desktop
        def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
            opened.append(url)
            return True

    monkeypatch.setattr(webbrowser, "get", lambda using=None: Browser("fake"))
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        url = status(app, "hello").url
        assert url.startswith("http://tuiapp-hello.localhost:")
        await pilot.press("c")
        assert app.clipboard == url
        await pilot.press("o")
        await until(pilot, lambda: opened == [url], "the browser call (in a thread)")
        # Without a display, webbrowser falls back to lynx and the like: they would take the terminal.
        notices = record_notices(app)
        monkeypatch.setattr(webbrowser, "get", lambda using=None: webbrowser.GenericBrowser("lynx"))
        await pilot.press("o")
        await until(pilot, lambda: any("(lynx) runs in this terminal" in n for n in notices), "the refusal")
        # The URL copied is one that answers.
        port = url.rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get("/", headers={"Host": f"tuiapp-hello.localhost:{port}"})
        assert r.json() == {"message": "Hello, world!"}


async def test_enter_shows_details_with_replicas_urls_and_a_working_curl(tmp_path: Path) -> None:
    app = make_app(tmp_path, own_ports=True)
    async with app.run_test(size=(160, 45)) as pilot:
        await started(pilot)
        await pilot.press("down", "enter")
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.endpoint == "echo"
        await until(pilot, lambda: status(app, "echo").own_url is not None, "echo's own port")
        await pilot.pause(1.2)  # one tick: the screen follows the snapshots
        replicas = screen.query_one("#detail-replicas")
        echo = status(app, "echo")  # type: ignore[attr-defined]
        # Its replicas, then the snapshot process they are forked from (its memory is the app's too).
        forked = ["snapshot"] if (echo.snapshot or {}).get("mode") == "snapshot" else []
        assert [str(k.value) for k in replicas.rows] == [r.id for r in echo.replicas] + forked
        assert forked, echo.snapshot
        pid = next(iter(pids(app, "echo")))
        assert str(pid) in str(replicas.get_row_at(0))  # type: ignore[attr-defined]
        whats = [w for w, _, _ in screen._urls]
        assert whats == ["label", "domain", "own port"]
        await pilot.press("c")  # the first row: the label URL's curl
        curl = app.clipboard
        assert curl.startswith("curl -X POST -H 'content-type: application/json' -d '{}' http://tuiapp-echo.localhost:")
        # Keys act on the endpoint shown: x stops echo from here.
        await pilot.press("x")
        await until(pilot, lambda: status(app, "echo").state == "stopped", "echo stopped from the details")
        await pilot.press("s")
        await until(pilot, lambda: status(app, "echo").state == "running", "echo running")
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_logs_follow_live_lines_filter_copy_save_and_toggle(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        pane = app.log_pane
        assert pane.pool == "hello" and pane.display
        port = app.engine.snapshot().gateway_url.rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for name in ("ada", "bob", "cyd"):
                r = await client.get(f"/?name={name}", headers={"Host": "tuiapp-hello.localhost"})
                assert r.status_code == 200
        # The gateway's access lines arrive as live LogLine events, prefixed by replica.
        await until(pilot, lambda: sum("GET /?name=" in ln.text for ln in pane.shown) == 3, "3 access lines")
        assert all(ln.replica.startswith("hello.") for ln in pane.shown if "GET /?name=" in ln.text)

        await pilot.press("slash")
        await pilot.press(*"bob")
        assert len(pane.shown) == 1 and "name=bob" in pane.shown[0].text
        await pilot.press("enter")
        assert app.focused is app.table and pane.needle == "bob"

        await pilot.press("y")
        assert "GET /?name=bob 200" in app.clipboard and "ada" not in app.clipboard
        await pilot.press("w")
        await until(pilot, lambda: list(tmp_path.glob("mwtui-hello-*.log")), "the saved log")
        saved = next(tmp_path.glob("mwtui-hello-*.log")).read_text()
        assert "GET /?name=bob 200" in saved and "hello." in saved

        await pilot.press("slash", "escape")  # esc clears the filter
        assert pane.needle == "" and sum("GET /?name=" in ln.text for ln in pane.shown) == 3

        await pilot.press("f")
        assert pane.follow is False
        await pilot.press("f")
        assert pane.follow is True

        await pilot.press("l")
        assert not pane.display
        await pilot.press("l")
        assert pane.display


async def test_R_reloads_the_app_file(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        old = pids(app, "hello")
        await pilot.press("R")
        await until(pilot, lambda: app.engine.snapshot().reload.reloads == 1, "one reload", 60)
        snap = app.engine.snapshot()
        assert snap.reload.generation == 2
        await until(pilot, lambda: all_running(app) and not pids(app, "hello") & old, "the new generation", 60)


async def test_help_and_the_command_palette(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert status(app, "hello").state == "running"  # keys do not reach the app under the help
        # What each key says is today's behaviour (the help lists every binding's tooltip).
        tips = {b.key: b.tooltip for b in app.BINDINGS}  # type: ignore[union-attr]
        assert tips["a"] == "hand the pool back to the autoscaler (after + or -)"
        assert not any("for now" in (t or "") for t in tips.values())
        from mwtui.tui.screens.help import keys_table
        from rich.console import Console

        console = Console(width=240, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(keys_table(app.screen.key_list))
        shown = " ".join(console.export_text().split())
        for text in ("hand the pool back to the autoscaler", "run the selected function once now", "request"):
            assert text in shown, text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # The same commands are in the palette: "Stop" stops the selected endpoint.
        await pilot.press("ctrl+p")
        await pilot.press(*"stop")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: status(app, "hello").state == "stopped", "stopped from the palette")


async def test_a_crash_raises_a_notification(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        notices = record_notices(app)
        (pid,) = pids(app, "hello")
        os.kill(pid, signal.SIGKILL)
        await until(pilot, lambda: any("hello crashed" in n for n in notices), "the crash notice")
        assert status(app, "hello").restarts == 1
        await until(pilot, lambda: status(app, "hello").state == "running", "restarted")


async def test_q_drains_and_leaves_no_process(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        engine = app.engine
        assert isinstance(engine, Engine) and engine.gateway.proc is not None
        ours = {engine.gateway.proc.pid}
        for e in engine.snapshot().endpoints:
            ours |= {r.pid for r in e.replicas if r.pid}
        for pid in list(ours):
            ours |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
        assert len(ours) >= 4  # the gateway and one replica per pool
        await pilot.press("q")
        # The app is leaving: no pilot pauses any more, the loop's own sleep it is.
        await eventually_async(lambda: app.return_code is not None, 30, "the app to exit")
        assert app.return_code == 0
    assert not [p for p in ours if alive(p)]


async def test_a_file_that_does_not_load_shows_the_error_panel(tmp_path: Path) -> None:
    app = make_app(tmp_path, app_file=str(FIXTURES / "tui_broken.py"))
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(LoadErrorPanel)
        await until(pilot, lambda: panel.display, "the error panel", 60)
        text = str(panel.query_one("#load-error-text").render())
        assert "tui_broken.py:16" in text and "the settings file is missing" in text
        assert not app.table.display
        await pilot.press("x")  # no endpoint, no engine: nothing happens, nothing breaks
        await pilot.press("q")
        # The app is leaving: no pilot pauses any more, the loop's own sleep it is.
        await eventually_async(lambda: app.return_code is not None, 15, "the app to exit")
        assert app.return_code == 0


# ----------------------------------------------------------------------------- the screen alone
async def test_sort_by_key_and_by_clicking_a_header() -> None:
    app = MwtuiApp(frozen.FrozenEngine(), tick=None)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.table.row_count == 8, "rows")
        file_order = [e.name for e in frozen.endpoints()]
        assert row_order(app.table) == file_order
        await pilot.press("S")  # first: by name
        assert row_order(app.table) == sorted(file_order, key=str.lower)
        await pilot.press("S")  # then by kind
        assert app.table.sort_key == "kind"
        app.table.select("api")
        await pilot.click(EndpointTable, offset=(header_x(app.table, "rps"), 0))
        assert app.table.sort_key == "rps"
        assert row_order(app.table)[:3] == ["api", "hello", "echo"]  # busiest first
        assert app.table.selected == "api"  # the selection follows its row
        await pilot.click(EndpointTable, offset=(header_x(app.table, "rps"), 0))
        assert row_order(app.table)[-1] == "api"  # again: reversed


async def test_keys_typed_fast_after_slash_land_in_the_filter() -> None:
    """A paste, or tmux send-keys: every key is queued before `/` has been handled."""
    app = MwtuiApp(frozen.FrozenEngine(), tick=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine_ready, "the frozen engine")
        keys = {"/": "slash", "=": "equals_sign", "?": "question_mark", " ": "space"}
        for ch in "/GET /?name=you1":
            app.post_message(events.Key(keys.get(ch, ch), ch))
        await until(pilot, lambda: app.log_pane.needle == "GET /?name=you1", "the whole text in the filter")
        assert app.engine.commands == []  # not one of them ran as a key: no `a`, no `=`
        assert len(app.log_pane.shown) == 11  # you1, you10..you19
        assert not isinstance(app.screen, HelpScreen)


def test_sparkline_fills_from_the_right_and_scales_to_the_top() -> None:
    assert sparkline([], 10).plain == " " * 10
    line = sparkline([1.0] * 30 + [2.0] * 30, 10)
    assert line.plain == "▅▅▅▅▅█████"  # 1.0 is half of 2.0: the middle bar
    assert sparkline([5.0], 10).plain == " " * 9 + "█"
    assert sparkline([0.0] * 60, 10).plain == "▁" * 10


def test_sparklines_share_one_scale_across_the_table() -> None:
    history = RateHistory()
    history.push("quiet", [1.0] * 60)
    history.push("busy", [1000.0] * 60)
    top = history.shared_top(10)
    assert top == 1000.0
    quiet = sparkline(history.series("quiet"), 10, top=top)
    assert quiet.plain == "▁" * 10 and quiet.spans[0].style == "cyan"  # some traffic: the lowest bar, lit
    assert sparkline(history.series("busy"), 10, top=top).plain == "█" * 10
    assert sparkline([0.0] * 60, 10, top=top).spans[0].style == "grey35"  # none: grey


def test_narrow_screens_drop_the_least_needed_columns() -> None:
    widths = column_widths(frozen.snapshot())
    wide = fit_columns(widths, 160)
    narrow = fit_columns(widths, 79)
    assert wide == ["state", "name", "kind", "url", "repl", "range", "rps", "p50", "p95", "err", "cpu", "mem"]
    assert narrow[:2] == ["state", "name"] and {"repl", "rps", "p95", "err"} <= set(narrow)
    assert "url" not in narrow and "range" not in narrow


def test_crash_notices_once_per_pool() -> None:
    snap = frozen.snapshot()

    def bump(e: EndpointStatus, **kw: Any) -> EndpointStatus:
        return EndpointStatus(**{**e.__dict__, **kw})

    later = Snapshot(**{**snap.__dict__, "endpoints": tuple(
        bump(e, restarts=e.restarts + 1, last_error="boom") if e.spec.pool == "Counter"
        else bump(e, state="failed") if e.name == "hello" else e
        for e in snap.endpoints
    )})
    notices = crash_notices(snap, later)
    assert [sev for _, sev in notices] == ["error", "warning"]
    assert notices[0][0].startswith("hello failed") and notices[1][0].startswith("Counter crashed")
    assert crash_notices(None, later) == []


def test_curl_lines() -> None:
    e = frozen.endpoints()
    assert fmt.curl(e[0].spec, e[0].url) == "curl http://demo-hello.localhost:8470/"
    secure = fmt.curl(e[2].spec, e[2].url)
    assert '"Modal-Key: $MODAL_KEY"' in secure and secure.startswith("curl -X POST")
    urls = fmt.endpoint_urls(e[1])
    assert urls[1][0] == "domain" and "-H 'Host: echo.example.com'" in urls[1][2]
    # A parameter set's URLs carry its values; nothing is appended after them.
    variant = replace(e[1], url="http://echo.localhost:8470/?name=ann&n=1", own_url="http://127.0.0.1:9001/?name=ann&n=1",
                      variant_of="echo", values={"name": "ann", "n": 1})
    urls = fmt.endpoint_urls(variant)
    assert urls[0][2].endswith("'http://echo.localhost:8470/?name=ann&n=1'")
    assert urls[1][1] == "http://echo.example.com:8470/?name=ann&n=1"
    assert urls[1][2].endswith("'http://127.0.0.1:8470/?name=ann&n=1'")
    assert urls[-1][2].endswith("'http://127.0.0.1:9001/?name=ann&n=1'")


def test_the_replica_cap_and_where_it_comes_from() -> None:
    import io

    from mwtui.tui.screens.detail import settings_table
    from rich.console import Console

    e = frozen.endpoints()
    hello, echo = e[0], e[1]
    assert (fmt.max_text(hello), fmt.max_text(echo)) == ("∞", "4")  # made by hand: the spec's own figure
    default = replace(hello, max_replicas=8, max_source="--max-replicas")
    assert fmt.max_text(default) == "8 (mwtui default, --max-replicas)"
    assert fmt.max_text(replace(echo, max_replicas=4, max_source="max_containers")) == "4 (max_containers)"
    assert fmt.range_text(default) == "0..8"
    replicas = default.to_json()["replicas"]
    assert (replicas["max"], replicas["max_source"]) == (8, "--max-replicas")
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(settings_table(default))  # the details screen's settings
    assert "max containers 8 (mwtui default, --max-replicas)" in " ".join(console.export_text().split())


# ----------------------------------------------------------------------------- snapshots
class SnapshotsBesideTests(pytest_textual_snapshot.SVGImageExtension):
    """Keep the pictures in tests/snapshots/<test module>/ rather than syrupy's __snapshots__."""

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        path = Path(test_location.filepath)
        return str(path.parent / "snapshots" / path.stem)


@pytest.fixture
def frozen_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., MwtuiApp]]:
    monkeypatch.setattr(pytest_textual_snapshot, "SVGImageExtension", SnapshotsBesideTests)
    monkeypatch.setenv("TZ", "UTC")  # log times in the pictures
    time.tzset()

    def make(**kw: Any) -> MwtuiApp:
        app = MwtuiApp(frozen.FrozenEngine(**kw), tick=None)
        for name, values in frozen.HISTORY.items():
            app.rate_history.push(name, values)
        return app

    yield make
    monkeypatch.undo()
    time.tzset()


async def _ready(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, MwtuiApp)
    await until(pilot, lambda: app.engine_ready or app.query_one(LoadErrorPanel).display, "the frozen engine")
    await pilot.pause()


@pytest.fixture
def snap_compare(frozen_app: Any, snap_compare: Any) -> Any:
    # The monkeypatch in `frozen_app` must come before the plugin's fixture picks its extension.
    return snap_compare


def test_snapshot_main_80x24(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_ready)


def test_snapshot_main_160x45(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(160, 45), run_before=_ready)


def test_snapshot_details_of_a_failed_endpoint_160x45(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(
        frozen_app(), terminal_size=(160, 45), run_before=_ready, press=["down", "down", "down", "down", "enter"]
    )


def test_snapshot_details_80x24(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_ready, press=["down", "down", "down", "enter"])


def test_snapshot_help_80x24(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_ready, press=["question_mark"])


def test_snapshot_load_error_80x24(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(fail=frozen.BROKEN), terminal_size=(80, 24), run_before=_ready)


def test_snapshot_reload_error_and_filter_160x45(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    snap = frozen.snapshot()
    broken = Snapshot(**{**snap.__dict__, "error": frozen.BROKEN,
                         "reload": ReloadStatus(enabled=True, state="error", generation=3)})
    assert snap_compare(frozen_app(snap=broken), terminal_size=(160, 45), run_before=_ready,
                        press=["slash", *"name=you1", "enter"])


async def test_a_function_has_a_row_without_a_url_and_n_runs_it_once(tmp_path: Path) -> None:
    app_file = tmp_path / "funcs.py"
    app_file.write_text(
        "import os, modal\n"
        "app = modal.App('funcs')\n\n"
        "@app.function()\n"
        "def job():\n"
        f"    open({str(tmp_path / 'ran')!r}, 'a').write('x')\n\n"
        "@app.function()\n"
        "@modal.fastapi_endpoint()\n"
        "def web():\n"
        "    return job.remote()\n"
    )
    app = make_app(tmp_path, app_file=str(app_file))
    seen = record_notices(app)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.engine_ready and app.table.row_count == 2, "two rows")
        assert status(app, "job").state == "idle" and status(app, "job").desired == 0  # starts on its first call
        assert app.table.get_cell("job", "kind").plain == "function"
        assert app.table.get_cell("job", "url").plain == "not called yet"
        app.table.move_cursor(row=row_order(app.table).index("job"))
        await pilot.press("o")
        assert any("has no URL" in n for n in seen)
        await pilot.press("n")
        await until(pilot, lambda: (tmp_path / "ran").exists(), "the function to run once")
        await until(pilot, lambda: app.table.get_cell("job", "url").plain == "← mwtui", "its caller on its row")
        assert status(app, "job").ready == 1


async def test_i_opens_the_inspector_with_live_requests_details_and_replay(tmp_path: Path) -> None:
    from mwtui.tui.screens.inspector import InspectorScreen
    from mwtui.tui.screens.request_detail import RequestDetailScreen

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        port = app.engine.gateway.port
        r = httpx.get(f"http://127.0.0.1:{port}/?name=pilot", headers={"Host": "tuiapp-hello.localhost"}, timeout=10)
        assert r.status_code == 200
        await pilot.press("i")
        assert isinstance(app.screen, InspectorScreen) and app.screen.endpoint == "hello"
        inspector = app.screen
        await until(pilot, lambda: any(e["path"] == "/?name=pilot" for e in inspector.shown), "the request listed")
        await pilot.press("enter")
        assert isinstance(app.screen, RequestDetailScreen)
        assert app.screen.entry["path"] == "/?name=pilot" and app.screen.entry["status"] == 200
        await pilot.press("r")  # replay: a new entry, marked as the replay of this one
        original = app.screen.entry["id"]
        await pilot.press("escape")
        await until(pilot, lambda: any(e.get("replay_of") == original for e in inspector.shown), "the replay listed")
        await pilot.press("slash", *"nothing-matches", "enter")
        await until(pilot, lambda: inspector.shown == [], "the filter to hide every row")
        await pilot.press("escape", "escape")
        assert not isinstance(app.screen, (InspectorScreen, RequestDetailScreen))


def test_snapshot_inspector_80x24(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_ready, press=["i"])


def test_snapshot_inspector_160x45(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(160, 45), run_before=_ready, press=["i"])


def test_snapshot_request_detail_80x24(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=_ready, press=["i", "down", "down", "down", "enter"])


def test_snapshot_request_detail_160x45(frozen_app: Callable[..., MwtuiApp], snap_compare: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=(160, 45), run_before=_ready, press=["i", "down", "down", "down", "enter"])
