"""The facade's commands decide the domain's rules themselves (the screen only says what they did)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from mwtui.engine.facade import AppRef, Engine

APP = """
import modal

app = modal.App("cmd")


@app.function(max_containers=2)
@modal.fastapi_endpoint()
def capped():
    return "ok"
"""


async def _started(tmp_path: Path) -> Engine:
    app = tmp_path / "cmd.py"
    app.write_text(APP)
    engine = Engine(AppRef.parse(str(app)), port=0, reload=False, own_ports=False)
    await engine.start()
    assert await engine.wait_ready(30)
    return engine


def test_scale_never_pins_past_the_cap(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = await _started(tmp_path)
        try:
            assert engine.scale("capped", 5) == 2  # max_containers=2
            e = engine.snapshot().endpoints[0]
            assert (e.pinned, e.desired, e.cap) == (2, 2, (2, "max_containers"))
            assert engine.scale("capped", -1) == 0
            assert engine.snapshot().endpoints[0].pinned == 0
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_pool_brief_and_log_lines_are_the_facades_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = await _started(tmp_path)
        try:
            brief = engine.pool_brief("capped")
            assert brief is not None and (brief.state, brief.endpoints) == ("running", ("capped",))
            assert engine.pool_brief("nothing") is None
            mine = engine.log_lines("capped")
            assert [ln.t for ln in mine] == sorted(ln.t for ln in mine)
            assert all(ln.pool in ("capped", "mwtui") for ln in mine)
            assert all(ln.pool == "mwtui" for ln in engine.log_lines("mwtui"))
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_closing_right_after_a_scale_up_ends(tmp_path: Path) -> None:
    """`+` then `q`: the reconcile loop's wake and the close's cancel arrive together. On Python 3.11
    `asyncio.wait_for` swallowed that cancel and the pool's loop, and so the close, never ended."""
    async def scenario() -> None:
        engine = await _started(tmp_path)
        engine.scale("capped", 2)
        closing = asyncio.ensure_future(engine.close())
        done, _ = await asyncio.wait({closing}, timeout=60)  # a hang, not a speed: it never ended before
        assert done, "Engine.close() did not end"

    asyncio.run(scenario())


def test_an_empty_mwtui_home_is_the_default_and_never_silences_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MWTUI_HOME="" once made the reload rules ignore the current folder (the app's own, when mwtui runs
    from it): reload went off without a word."""
    from mwtui.tui import cli

    monkeypatch.setenv("MWTUI_HOME", "")
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["serve", "app.py"])
    rules = cli.engine_options(args)["watch_rules"]
    assert rules.extra_ignored_paths == (os.path.expanduser("~/.config/mwtui"),)
    assert rules.counts(str(tmp_path / "app.py"))
