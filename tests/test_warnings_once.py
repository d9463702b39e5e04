"""A warning the app's import raises is told once per generation (by discovery), not again by each
replica that imports the same file, nor on every restart."""

from __future__ import annotations

from pathlib import Path

from .conftest import start_serve, stop_serve

APP = """import modal
app = modal.App("warnonce")

@app.function(min_containers=2)
@modal.web_endpoint()
def hello():
    return {"ok": True}
"""


def test_an_import_warning_is_told_once_for_many_replicas(tmp_path: Path) -> None:
    app = tmp_path / "warnonce.py"
    app.write_text(APP)
    served = start_serve(app, env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_status("two replicas ready", lambda by: by["hello"]["replicas"]["ready"] >= 2)
    finally:
        stop_serve(served)
    told = [line for line in served.lines if "renamed to `@modal.fastapi_endpoint`" in line]
    assert len(told) == 1, told
    assert told[0].startswith("warning: warnonce.py:5:"), told
