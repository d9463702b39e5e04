"""Proxy-auth tokens: the store, the gateway's check, `mwtui token`, and tokens end to end through
`mwtui serve` on every kind of endpoint."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mwtui.engine import tokens as tokens_mod
from mwtui.engine.tokens import RECHECK_S, TokenCheck, TokenFileError, TokenStore

from .conftest import free_port, start_serve, stop_serve
from .eventually import eventually

pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------- the store
def test_create_list_verify_revoke(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "home" / "tokens.json")
    a, secret_a = store.create("laptop")
    b, secret_b = store.create()
    assert a.key.startswith("wk-") and secret_a.startswith("ws-") and len(secret_a) >= 32
    assert a.key != b.key and secret_a != secret_b
    assert [(t.key, t.name) for t in store.list()] == [(a.key, "laptop"), (b.key, "")]
    assert store.verify(a.key, secret_a) and store.verify(b.key, secret_b)
    assert not store.verify(a.key, secret_b) and not store.verify("wk-nope", secret_a)
    assert store.revoke(a.key) and not store.revoke(a.key)
    assert not store.verify(a.key, secret_a) and store.verify(b.key, secret_b)


def test_file_is_private_and_holds_no_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old = os.umask(0)  # even with a permissive umask
    try:
        store = TokenStore(home / "tokens.json")
        info, secret = store.create("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(home / "tokens.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    raw = (home / "tokens.json").read_bytes()
    assert secret.encode() not in raw and secret[3:].encode() not in raw
    assert hashlib.sha256(secret.encode()).hexdigest().encode() not in raw  # salted, not a bare hash
    assert info.key.encode() in raw
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_corrupt_file_is_a_clear_error_and_denies_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(TokenFileError, match="tokens.json"):
        TokenStore(path).list()
    check = TokenCheck(path)
    assert check("wk-a", "ws-b") is False
    assert "refuses every token" in capsys.readouterr().err


def test_check_follows_the_file_without_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    now = [100.0]
    check = TokenCheck(path, clock=lambda: now[0])
    assert not check("wk-x", "ws-y")  # no file yet: nothing is valid
    info, secret = store.create()
    now[0] += 0.06  # an unknown key makes it look again soon, so a new token works at once
    assert check(info.key, secret)
    assert not check(info.key, secret + "0")

    stats = []
    real_stat = os.stat
    monkeypatch.setattr(tokens_mod.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    for _ in range(1000):  # the hot path: no file access while the clock stands still
        assert check(info.key, secret)
    assert stats == []

    store.revoke(info.key)
    assert check(info.key, secret)  # not looked at yet...
    now[0] += RECHECK_S
    assert not check(info.key, secret)  # ...and refused once it is


# ----------------------------------------------------------------------------- mwtui token
def mwtui(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "token", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "MWTUI_HOME": str(home)},
    )


def test_token_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = mwtui(home, "create", "--name", "ci box")
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("Modal-Key:")[1].split()[0]
    secret = made.stdout.split("Modal-Secret:")[1].split()[0]
    assert key.startswith("wk-") and secret.startswith("ws-")
    assert TokenStore(home / "tokens.json").verify(key, secret)

    listed = mwtui(home, "list")
    assert listed.returncode == 0 and key in listed.stdout and "ci box" in listed.stdout
    assert secret not in listed.stdout and "ws-" not in listed.stdout
    as_json = json.loads(mwtui(home, "list", "--json").stdout)
    assert [t["key"] for t in as_json] == [key] and "secret" not in as_json[0]

    wrong = mwtui(home, "revoke", secret)  # a secret where the key belongs: refused, not echoed
    assert wrong.returncode == 1 and secret not in wrong.stderr + wrong.stdout
    assert mwtui(home, "revoke", "wk-unknown").returncode == 1
    gone = mwtui(home, "revoke", key)
    assert gone.returncode == 0 and key in gone.stdout
    assert "no tokens" in mwtui(home, "list").stdout


# ----------------------------------------------------------------------------- end to end
APP = '''
import os, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
import modal
from fastapi import Request

app = modal.App("guarded")
HITS = {hits!r}


def hit(kind):
    with open(HITS, "a") as f:
        f.write(kind + "\\n")


@app.function()
@modal.fastapi_endpoint(requires_proxy_auth=True)
def api(request: Request):
    hit("fastapi")
    return {{"headers": sorted(k.lower() for k in request.headers.keys())}}


@app.function()
@modal.asgi_app(requires_proxy_auth=True)
def raw():
    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        hit("asgi")
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": b"asgi ok"}})
    return asgi


@app.function()
@modal.wsgi_app(requires_proxy_auth=True)
def flaskless():
    def wsgi(environ, start):
        hit("wsgi")
        start("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi ok"]
    return wsgi


@app.function()
@modal.web_server({port}, requires_proxy_auth=True)
def server():
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            hit("web_server")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"server ok")

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", {port}), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
'''


def test_tokens_end_to_end_on_every_kind(tmp_path: Path) -> None:
    hits = tmp_path / "hits.txt"
    app = tmp_path / "guarded.py"
    app.write_text(APP.format(hits=str(hits), port=free_port()))
    home = tmp_path / "home"
    served = start_serve(app, env={"MWTUI_HOME": str(home)})
    labels = ["guarded-api", "guarded-raw", "guarded-flaskless", "guarded-server"]
    try:
        status = served.wait_running()
        assert all(e["state"] == "running" for e in status), status
        for label in labels:
            r = served.get(label)
            assert r.status_code == 401 and r.text == "modal-http: missing credentials for proxy authorization"
            r = served.get(label, headers={"Modal-Key": "wk-nope", "Modal-Secret": "ws-nope"})
            assert r.status_code == 401 and r.text == "modal-http: invalid credentials for proxy authorization"
        assert not hits.exists()  # user code never ran

        # Made while mwtui runs: good at once, on every kind, header names in any case.
        made = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "token", "create"], capture_output=True,
                              text=True, env={**os.environ, "MWTUI_HOME": str(home)}, timeout=60)
        key = made.stdout.split("Modal-Key:")[1].split()[0]
        secret = made.stdout.split("Modal-Secret:")[1].split()[0]
        for i, label in enumerate(labels):
            names = [("Modal-Key", "Modal-Secret"), ("modal-key", "modal-secret"), ("MODAL-KEY", "MODAL-SECRET"),
                     ("Modal-key", "mOdAl-SeCrEt")][i]
            r = served.get(label, headers={names[0]: key, names[1]: secret})
            assert r.status_code == 200, (label, r.status_code, r.text)
        seen = served.get("guarded-api", headers={"Modal-Key": key, "Modal-Secret": secret}).json()["headers"]
        assert "modal-key" in seen and "modal-secret" not in seen
        assert sorted(hits.read_text().split()) == sorted(["fastapi", "asgi", "wsgi", "web_server", "fastapi"])

        assert TokenStore(home / "tokens.json").revoke(key)

        def refused() -> httpx.Response | None:
            r = served.get("guarded-raw", headers={"Modal-Key": key, "Modal-Secret": secret})
            return r if r.status_code == 401 else None

        r = eventually(refused, 5, "the revocation seen")
        assert "invalid credentials" in r.text

        api = httpx.get(f"http://127.0.0.1:{served.port}/api/endpoints", timeout=10).text
        index = httpx.get(f"http://127.0.0.1:{served.port}/", timeout=10).text
        assert secret not in api and secret not in index
    finally:
        stop_serve(served)
    assert secret not in "\n".join(served.lines)  # nor in anything mwtui printed
    assert secret not in (home / "tokens.json").read_text()
