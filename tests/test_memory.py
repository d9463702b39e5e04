"""Honest memory (issue 20): a replica counts what it holds alone (USS), so replicas forked from one
snapshot no longer count the pages they share once each; the header's figure is mwtui's whole PSS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mwtui.engine.memory import held, tree_pss
from mwtui.engine.supervisor import process_children

from .conftest import start_serve, stop_serve

pytestmark = pytest.mark.timeout(120)

APP = '''
import modal

app = modal.App("mem")


@app.function(min_containers={n})
@modal.fastapi_endpoint()
def hello():
    return "hi"
'''


def test_uss_and_pss_of_this_process() -> None:
    mine = held(os.getpid())
    assert 0 < mine.uss <= mine.pss <= mine.rss
    assert tree_pss(os.getpid(), process_children()) >= mine.pss
    assert held(2**22 + 12345).rss == 0  # a pid that is gone holds nothing


def _replica_memory(tmp_path: Path, n: int, *flags: str) -> list[dict]:
    app = tmp_path / f"mem{n}.py"
    app.write_text(APP.format(n=n))
    served = start_serve(app, "--no-reload", *flags, env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        rows = served.wait_status(f"{n} replicas sampled", lambda rows: len(
            [r for r in rows["hello"]["replica_list"] if r["state"] == "ready" and r["memory_bytes"]]) == n, 60)
        return [r for r in rows["hello"]["replica_list"] if r["state"] == "ready"]
    finally:
        stop_serve(served)


def test_forked_replicas_count_what_they_hold_alone(tmp_path: Path) -> None:
    [cold] = _replica_memory(tmp_path, 1, "--cold-start")
    forked = _replica_memory(tmp_path, 6)
    total = sum(r["memory_bytes"] for r in forked)
    assert total < 6 * cold["memory_bytes"], (total, cold)  # they share the snapshot's pages
    assert sum(r["rss_bytes"] for r in forked) > total  # RSS counts those shared pages once per replica
