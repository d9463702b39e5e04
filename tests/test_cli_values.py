"""Values typed on the command line are checked where they are typed: a clear message and exit 2 (a
flag) or 1 (the APP argument, a stored value), never a silent change of meaning or a wait forever.
Each case runs the installed `mwtui` with MWTUI_HOME in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MWTUI = str(Path(sys.executable).parent / "mwtui")
APP = "import modal\napp = modal.App('v')\n@app.function()\n@modal.fastapi_endpoint()\ndef f():\n    return 1\n"


def run(tmp_path: Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # A short timeout: a case that waited (for a save of a missing file, say) fails instead of hanging.
    return subprocess.run(
        [MWTUI, *argv], capture_output=True, text=True, input=stdin, timeout=30, cwd=tmp_path,
        env={**os.environ, "MWTUI_HOME": str(tmp_path / "home")},
    )


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "v.py"
    path.write_text(APP)
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "v.py", "--port", "70000"], "argument --port: must be 0-65535, got '70000'"),
        (["v.py", "--port", "-1"], "argument --port: must be 0-65535, got '-1'"),
        (["list", "v.py", "--port", "0"], "argument --port: must be 1-65535, got '0'"),
        (["serve", "v.py", "--header-timeout", "nan"], "argument --header-timeout: 'nan' is not a number of seconds (0 or more, finite)"),
        (["serve", "v.py", "--keepalive-timeout", "inf"], "argument --keepalive-timeout: 'inf' is not a number of seconds"),
        (["token", "create", "--name", "x\x1b[31mred"], r"argument --name: use at most 64 letters"),
        (["export", "knative", "v.py", "--namespace", "Bad_NS"], "argument --namespace: a Kubernetes namespace"),
        (["export", "knative", "v.py", "--max-timeout", "0"], "argument --max-timeout: must be a whole number"),
        (["export", "knative", "v.py", "-o", "v.py"], "argument -o/--output: v.py exists and is not a folder"),
        (["secret", "export", "s", "--k8s-name", "Not A Name"], "argument --k8s-name: a Kubernetes name"),
    ],
)
def test_a_bad_flag_value_is_refused_naming_the_flag(tmp_path: Path, app: Path, argv: list[str], message: str) -> None:
    proc = run(tmp_path, *argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(
    "command", [["APP"], ["serve", "APP"], ["list", "APP"], ["export", "knative", "APP"], ["worker", "APP", "--pool", "f"]]
)
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nope.py", "no such file: {tmp}/nope.py"),
        (".", "{tmp} is a folder; give the Python file"),
        ("notes.txt", "{tmp}/notes.txt is not a Python file"),
        ("v.py::nosuch", "{tmp}/v.py has no variable `nosuch`"),
    ],
)
def test_an_app_that_cannot_be_is_named_and_exits_1_at_once(
    tmp_path: Path, app: Path, command: list[str], target: str, message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not python\n")
    proc = run(tmp_path, *(target if word == "APP" else word for word in command))
    assert proc.returncode == 1, proc.stderr
    assert message.format(tmp=tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_module_is_named_without_a_traceback(tmp_path: Path) -> None:
    proc = run(tmp_path, "serve", "-m", "no_such_pkg.app")
    assert proc.returncode == 1
    assert "no module named 'no_such_pkg.app'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_port_in_the_environment_of_worker_is_named(tmp_path: Path, app: Path) -> None:
    proc = subprocess.run([MWTUI, "worker", "v.py", "--pool", "f"], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path, env={**os.environ, "MWTUI_HOME": str(tmp_path / "home"), "PORT": "99999"})
    assert proc.returncode == 1 and "$PORT must be a port number 1-65535, got '99999'" in proc.stderr


def test_token_list_escapes_a_hand_edited_name(tmp_path: Path) -> None:
    assert run(tmp_path, "token", "create", "--name", "ci bot").returncode == 0
    tokens = tmp_path / "home" / "tokens.json"
    data = json.loads(tokens.read_text())
    data["tokens"][0]["name"] = "evil\x1b]0;owned\x07\u202e"
    tokens.write_text(json.dumps(data))
    out = run(tmp_path, "token", "list").stdout
    assert "evil\\x1b]0;owned\\x07\\u202e" in out and "\x1b" not in out and "\u202e" not in out


def test_token_list_shows_hand_edited_entries_without_a_traceback(tmp_path: Path) -> None:
    assert run(tmp_path, "token", "create", "--name", "one").returncode == 0
    assert run(tmp_path, "token", "create", "--name", "two").returncode == 0
    tokens = tmp_path / "home" / "tokens.json"
    data = json.loads(tokens.read_text())
    data["tokens"][0]["created"] = "yesterday"
    data["tokens"][1]["created"] = 1e300
    tokens.write_text(json.dumps(data))
    proc = run(tmp_path, "token", "list")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("wk-")]
    assert len(lines) == 2 and all("?" in line for line in lines), proc.stdout


def test_secret_list_escapes_hand_edited_names_and_keys(tmp_path: Path) -> None:
    assert run(tmp_path, "secret", "set", "db", "USER=me").returncode == 0
    store = tmp_path / "home" / "secrets.json"
    data = json.loads(store.read_text())
    data["secrets"]["db\x1b[2J"] = {"K\x1b[8m": "v"}
    store.write_text(json.dumps(data))
    out = run(tmp_path, "secret", "list").stdout
    assert "db\\x1b[2J" in out and "K\\x1b[8m" in out and "\x1b" not in out


def test_a_secret_name_with_a_line_break_is_refused(tmp_path: Path) -> None:
    proc = run(tmp_path, "secret", "set", "db\n", "USER=me")
    assert proc.returncode == 1 and "invalid secret name 'db\\n'" in proc.stderr


@pytest.mark.parametrize("source", ["stdin", "json"])
def test_a_secret_value_with_a_nul_byte_is_refused_naming_its_key(tmp_path: Path, source: str) -> None:
    if source == "stdin":
        proc = run(tmp_path, "secret", "set", "db", "PASSWORD=-", stdin="pa\0ss")
    else:
        (tmp_path / "s.json").write_text(json.dumps({"PASSWORD": "pa\0ss"}))
        proc = run(tmp_path, "secret", "set", "db", "--from-json", "s.json")
    assert proc.returncode == 1
    assert "the value of PASSWORD holds a NUL byte" in proc.stderr
    assert run(tmp_path, "secret", "list").stdout.startswith("no secrets yet")
