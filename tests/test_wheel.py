"""`pip install mwtui` at full speed (issue 20): the wheel's build hook (setup.py) compiles the gateway's
hot path, so a wheel installed into a fresh venv serves an app with the compiled gateway."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
APP = '''
import modal

app = modal.App("wheel")


@app.function()
@modal.fastapi_endpoint()
def hello():
    return {"from": "the wheel"}
'''


@pytest.mark.skipif(shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
                    is None, reason="no C compiler: the wheel would carry the sources only")
def test_the_wheel_carries_the_compiled_gateway_and_serves_with_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "tests", "bench", "__pycache__", "*.so", "_native.sha256", "build", "*.egg-info",
        ".pytest_cache", ".ruff_cache"))
    dist = tmp_path / "dist"
    # The build environment is this one (setuptools and mypy come with the test and native extras).
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                            "-w", str(dist)], cwd=src, capture_output=True, text=True, timeout=500)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = dist.glob("mwtui-*.whl")
    assert not wheel.name.endswith("-none-any.whl")  # compiled: for this platform only

    # A fresh venv with only the wheel; its dependencies are found in this environment's packages.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=120)
    where = subprocess.run([str(python), "-c", "from mwtui.engine.gateway import native as n; "
                            "print(n.state(n.FOLDER), n.FOLDER)"], capture_output=True, text=True, check=True)
    state, folder = where.stdout.split()
    assert state == "compiled" and folder.startswith(str(venv)), where.stdout

    app = tmp_path / "wheel_app.py"
    app.write_text(APP)
    proc = subprocess.Popen([str(python), "-m", "mwtui.tui.cli", "serve", str(app), "--port", "0", "--no-reload"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={"PATH": "/usr/bin:/bin", "MWTUI_HOME": str(tmp_path / "home")})
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(ln) for ln in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            found = [m for ln in lines if (m := re.search(r"gateway http://localhost:(\d+)", ln))]
            port = int(found[0].group(1)) if found else None
            time.sleep(0.1)
        assert port, "".join(lines)
        while time.monotonic() < deadline:
            r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "wheel-hello.localhost"}, timeout=10)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.json() == {"from": "the wheel"}
        assert not any("uncompiled" in ln for ln in lines), "".join(lines)
    finally:
        proc.terminate()
        proc.wait(30)
