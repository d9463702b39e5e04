"""The one isolated import child (engine/import_child.py), shared by discovery and export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mwtui.engine import import_child
from mwtui.engine.loader import AppRef

APP = "import modal\napp = modal.App('kid')\nprint('noise on stdout')\n"


def test_both_jobs_run_in_the_same_child_and_answer_on_their_pipe(tmp_path: Path) -> None:
    app = tmp_path / "kid.py"
    app.write_text(APP)
    ref = AppRef.parse(str(app))
    manifest = import_child.run_blocking(ref, "manifest", 30)
    assert not manifest.timed_out and json.loads(manifest.payload)["app"] == "kid"
    info = import_child.run_blocking(ref, "introspect", 30)
    assert json.loads(info.payload) == {"app": "kid", "pools": {}}
    assert "noise on stdout" in info.output  # what the app prints is kept apart from the answer


def test_a_hung_import_is_stopped_and_its_stack_read(tmp_path: Path) -> None:
    app = tmp_path / "hang.py"
    app.write_text("import time\nimport modal\napp = modal.App('hang')\nwhile True:\n    time.sleep(0.05)\n")
    done = import_child.run_blocking(AppRef.parse(str(app)), "manifest", 2,
                                     stack_until=lambda text: "hang.py" in text)
    assert done.timed_out and done.payload == b""
    assert f'File "{app}", line 5' in done.stack or f'File "{app}", line 4' in done.stack


def test_an_unknown_job_is_a_usage_line() -> None:
    done = subprocess.run([sys.executable, "-m", "mwtui.engine.import_child", "--fd", "1", "--job", "nope", "x.py"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage: python -m mwtui.engine.import_child" in done.stderr
