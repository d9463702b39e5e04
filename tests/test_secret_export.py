"""`mwtui secret export NAME`: what `mwtui export knative` pipes into `kubectl create secret generic
... --from-env-file=<(mwtui secret export NAME)`, run for real (with kubectl's client-side dry run where
kubectl is installed, and against a port of kubectl's env-file reader everywhere)."""

from __future__ import annotations

import base64
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mwtui.engine.export.introspect import SecretInfo
from mwtui.engine.export.secrets import SecretPlan
from mwtui.engine.store.secrets import SecretStore
from mwtui.tui.cli import main

MWTUI = Path(sys.executable).parent / "mwtui"
KUBECTL = shutil.which("kubectl")

TRICKY = {
    "QUOTED": '"double" and \'single\'',
    "ONLY_QUOTES": '""',
    "EQUALS": "a=b==c",
    "HASH": "#not a comment",
    "SPACES": "  lead and trail  ",
    "EMPTY": "",
    "UNICODE": "héllo ✓ \\n stays two characters",
    "DOLLAR": "$HOME `id` $(id)",
    "lower.dash-key": "ok",
}


def read_env_file(text: str) -> dict[str, str]:
    """kubectl's reader (staging/src/k8s.io/kubectl/pkg/cmd/util/env_file.go): lines split as
    bufio.ScanLines does (a trailing CR dropped), leading whitespace trimmed, `#` lines and blank lines
    skipped, key = up to the first `=` (an env var name), value = the rest, verbatim."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, raw in enumerate(lines):
        line = raw[:-1] if raw.endswith("\r") else raw
        if i == 0:
            line = line.removeprefix("\ufeff")
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        valid = key and (key[0].isalpha() or key[0] in "-._") and all(c.isalnum() or c in "-._" for c in key)
        assert valid, f"{key!r} is not a valid key name"
        assert eq, f"kubectl would read {key!r} from its own environment"
        out[key] = value
    return out


def export(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["secret", "export", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def home(mwtui_home: Path) -> Path:
    return mwtui_home


def test_env_format_round_trips_through_kubectls_reader(capsys: pytest.CaptureFixture[str]) -> None:
    SecretStore().set("api", TRICKY)
    code, out, err = export("api", capsys=capsys)
    assert code == 0 and err == ""
    assert read_env_file(out) == TRICKY
    assert [line.partition("=")[0] for line in out.splitlines()] == sorted(TRICKY)  # one line a key


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30),
                       max_size=5))
def test_any_single_line_values_round_trip(values: dict[str, str]) -> None:
    from mwtui.tui.commands.secret import _env_file

    assert read_env_file(_env_file("x", values)) == values


def test_unknown_name_names_it_and_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = export("nope", capsys=capsys)
    assert code == 1 and "no secret 'nope'; there are no secrets yet" in err
    SecretStore().set("api", {"A": "1"})
    SecretStore().set("db", {"B": "2"})
    code, out, err = export("nope", capsys=capsys)
    assert code == 1 and "no secret 'nope'; known secrets: api, db" in err
    # In a pipe, a line kubectl refuses, so `--from-env-file=<(...)` cannot make an empty Secret.
    with pytest.raises(AssertionError, match="is not a valid key name"):
        read_env_file(out)
    assert "1" not in out and "2" not in out


def test_a_line_break_is_refused_for_env_and_carried_by_a_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    SecretStore().set("Certs_Prod", {"PEM": pem, "CRLF_END": "x\r", "PLAIN": "p"})
    code, out, err = export("Certs_Prod", capsys=capsys)
    assert code == 1 and "the value of CRLF_END has a line break" in err
    assert "mwtui secret export Certs_Prod --format manifest | kubectl apply -f -" in err
    assert "abc" not in out and "BEGIN" not in out
    code, out, err = export("Certs_Prod", "--format", "manifest", "-n", "prod", capsys=capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "Secret" and doc["metadata"] == {"name": "certs-prod", "namespace": "prod"}
    assert {k: base64.b64decode(v).decode() for k, v in doc["data"].items()} == {
        "PEM": pem, "CRLF_END": "x\r", "PLAIN": "p"}
    code, out, _ = export("Certs_Prod", "--format", "manifest", "--k8s-name", "mine", capsys=capsys)
    assert json.loads(out)["metadata"] == {"name": "mine"}


def test_keys_kubectl_would_refuse_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    SecretStore().set("odd", {"1ABC": "v", "OK": "v"})
    code, _, err = export("odd", capsys=capsys)
    assert code == 1 and "key '1ABC' is not a name kubectl accepts" in err
    SecretStore().set("spaced", {"MY KEY": "v"}, replace=True)
    code, _, err = export("spaced", "--format", "manifest", capsys=capsys)
    assert code == 1 and "key 'MY KEY' is not a key a Kubernetes Secret can hold" in err


def test_values_are_not_printed_to_a_terminal(home: Path) -> None:
    SecretStore().set("api", {"A": "s3cret"})
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run([str(MWTUI), "secret", "export", "api"], stdout=terminal, stderr=subprocess.PIPE,
                              env={**os.environ, "MWTUI_HOME": str(home)}, timeout=60, text=True)
        os.set_blocking(controller, False)
        try:
            shown = os.read(controller, 4096)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 1 and "not printing secret values to a terminal" in proc.stderr
    assert b"s3cret" not in shown


def _printed_command(name: str) -> str:
    """The line `mwtui export knative` prints for `Secret.from_name(name)`."""
    plan = SecretPlan("app", namespace=None)
    plan.refs("pool", (SecretInfo(kind="name", name=name),))
    (command,) = plan.commands()
    assert f"--from-env-file=<(mwtui secret export {name})" in command
    return command


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_printed_kubectl_pipeline_makes_the_secret(home: Path) -> None:
    SecretStore().set("api", TRICKY)
    env = {**os.environ, "MWTUI_HOME": str(home), "PATH": f"{MWTUI.parent}{os.pathsep}{os.environ['PATH']}",
           "KUBECONFIG": str(home / "no-kubeconfig")}
    command = _printed_command("api") + " --dry-run=client -o json"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    secret = json.loads(done.stdout)
    assert secret["metadata"]["name"] == "api"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == TRICKY
    # An unknown name fails the whole line, rather than making an empty Secret.
    command = _printed_command("missing") + " --dry-run=client -o json"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and "no secret 'missing'; known secrets: api" in done.stderr
    assert '"kind": "Secret"' not in done.stdout
