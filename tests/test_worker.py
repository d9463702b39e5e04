"""The replica entry point, run as the supervisor runs it: a real process in its own session, a ready
pipe and a lifeline pipe passed by fd, real HTTP over its unix socket or the web server's port."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from mwtui.engine.loader import install_sdk
from mwtui.engine.sdk.call_wire import CONTENT_TYPE, Call, decode_reply, encode_call
from mwtui.engine.worker.report import RETIRED_EXIT_CODE

from .eventually import eventually

FIXTURES = Path(__file__).parent / "fixtures"
READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_message(fd: int, timeout: float) -> dict[str, Any]:
    """The first line on the ready pipe (fails on EOF or timeout)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no message within {timeout}s (got {buf!r})"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"ready pipe closed without a message (got {buf!r})"
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


class Worker:
    def __init__(self, app: str, pool: str, env: dict[str, str] | None = None, ready_fd: bool = True) -> None:
        self.sock_dir = tempfile.mkdtemp(prefix="mw")  # AF_UNIX paths must stay short
        self.log_path = Path(self.sock_dir) / "output.log"
        self.ready_r, ready_w = os.pipe()
        lifeline_r, self.lifeline_w = os.pipe()
        full_env = {**os.environ, "MWTUI_LIFELINE_FD": str(lifeline_r), **(env or {})}
        pass_fds = [lifeline_r]
        if ready_fd:
            full_env["MWTUI_READY_FD"] = str(ready_w)
            pass_fds.append(ready_w)
        else:
            full_env.pop("MWTUI_READY_FD", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mwtui.engine.worker", str(FIXTURES / app), "--pool", pool,
                 "--socket-dir", self.sock_dir, "--replica", f"{pool}.0"],
                cwd=FIXTURES, env=full_env, pass_fds=pass_fds, start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT,
            )
        os.close(ready_w)
        os.close(lifeline_r)
        self.message: dict[str, Any] = {}

    def wait_message(self) -> dict[str, Any]:
        self.message = read_message(self.ready_r, READY_TIMEOUT)
        return self.message

    def address(self, endpoint: str) -> str:
        return self.message["upstreams"][endpoint]["address"]

    def client(self, endpoint: str) -> httpx.Client:
        kind, _, where = self.address(endpoint).partition(":")
        if kind == "unix":
            return httpx.Client(transport=httpx.HTTPTransport(uds=where), base_url="http://replica", timeout=10)
        return httpx.Client(base_url=f"http://{where}", timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(EXIT_TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Closing the lifeline takes down anything of the replica's group still alive.
        for fd in (self.lifeline_w, self.ready_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)


@contextmanager
def replica(app: str, pool: str, env: dict[str, str] | None = None) -> Iterator[Worker]:
    w = Worker(app, pool, env)
    try:
        msg = w.wait_message()
        assert msg["event"] == "ready", f"{msg}\n--- output ---\n{w.log()}"
        yield w
    finally:
        w.close()


def failed(app: str, pool: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
    w = Worker(app, pool, env)
    try:
        msg = w.wait_message()
        assert msg["event"] == "failed", msg
        return msg, w.proc.wait(EXIT_TIMEOUT)
    finally:
        w.close()


def line_of(fixture: str, text: str) -> int:
    lines = (FIXTURES / fixture).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- fastapi_endpoint ----------------------------------------------------------------------------


def test_fastapi_ready_message_and_json_string() -> None:
    with replica("worker_fastapi.py", "hello") as w:
        msg = w.message
        assert msg["pid"] == w.proc.pid
        assert isinstance(msg["startup_ms"], (int, float))
        assert msg["upstreams"] == {
            "hello": {"address": f"unix:{w.sock_dir}/hello.0.sock", "dispatch": None}
        }
        with w.client("hello") as c:
            r = c.get("/", params={"name": "space"})
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            assert r.text == '"Hello, space"'


def test_fastapi_post_dict_body() -> None:
    with replica("worker_fastapi.py", "echo") as w, w.client("echo") as c:
        r = c.post("/", json={"a": 1, "b": [2, 3]})
        assert r.status_code == 200
        assert r.json() == {"got": {"a": 1, "b": [2, 3]}}
        assert c.get("/").status_code == 405


def test_fastapi_one_route_only() -> None:
    with replica("worker_fastapi.py", "hello") as w, w.client("hello") as c:
        r = c.get("/other")
        assert r.status_code == 404
        assert r.json() == {"detail": "Not Found"}
        assert c.head("/").status_code == 405
        r = c.post("/")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET"
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 404, path


def test_fastapi_docs_on() -> None:
    with replica("worker_fastapi.py", "documented") as w, w.client("documented") as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        assert c.get("/", params={"x": 7}).json() == {"x": 7}


def test_fastapi_cors() -> None:
    with replica("worker_fastapi.py", "hello") as w, w.client("hello") as c:
        r = c.options("/", headers={
            "Origin": "http://e.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-custom",
        })
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://e.com"
        assert r.headers["access-control-allow-credentials"] == "true"
        assert r.headers["access-control-allow-headers"] == "x-custom"
        assert r.headers["access-control-max-age"] == "600"
        assert "POST" in r.headers["access-control-allow-methods"]
        r = c.get("/", headers={"Origin": "http://e.com"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://e.com"
        assert "Origin" in r.headers["vary"]


def test_fastapi_query_validation() -> None:
    with replica("worker_fastapi.py", "square") as w, w.client("square") as c:
        r = c.get("/")
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["query", "x"]
        assert c.get("/", params={"x": 3}).json() == {"square": 9}


def test_fastapi_streaming_response() -> None:
    with replica("worker_fastapi.py", "stream") as w, w.client("stream") as c:
        with c.stream("GET", "/", params={"n": 3}) as r:
            assert r.status_code == 200
            body = "".join(r.iter_text())
        assert body == "chunk0\nchunk1\nchunk2\n"


def test_environment_from_image_secrets_and_env() -> None:
    with replica("worker_fastapi.py", "environ") as w, w.client("environ") as c:
        assert c.get("/").json() == {
            "FROM_IMAGE": "image", "FROM_SECRET": "secret", "FROM_ENV": "env", "MODAL_IS_REMOTE": "1",
        }


def test_sigterm_lets_inflight_request_finish(tmp_path: Path) -> None:
    env = {"MWTUI_TEST_MARKERS": str(tmp_path)}
    with replica("worker_fastapi.py", "slow", env) as w, w.client("slow") as c:
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(r=c.get("/", params={"seconds": 1.0})))
        t.start()
        eventually(lambda: (tmp_path / "slow-started").exists(), 10, "the slow handler started")
        w.proc.send_signal(signal.SIGTERM)
        t.join(EXIT_TIMEOUT)
        assert result["r"].status_code == 200
        assert result["r"].json() == {"slept": 1.0}
        assert w.proc.wait(EXIT_TIMEOUT) == 0
        assert not os.path.exists(w.address("slow").removeprefix("unix:"))


def test_user_output_is_unbuffered_and_server_logs_brief() -> None:
    with replica("worker_fastapi.py", "shout") as w, w.client("shout") as c:
        assert c.get("/").json() == "ok"
        eventually(lambda: "no newline yet" in w.log(), 10, lambda: f"the unfinished line in the log: {w.log()}")
        assert w.signal() == 0
        log = w.log()
        assert "INFO" not in log and "GET /" not in log, log  # no uvicorn info lines, no access log


def test_sigint_stops_gracefully() -> None:
    with replica("worker_fastapi.py", "hello") as w:
        assert w.signal(signal.SIGINT) == 0


def test_without_ready_fd_messages_go_to_stderr() -> None:
    w = Worker("worker_fastapi.py", "hello", ready_fd=False)
    try:
        eventually(lambda: '"event": "ready"' in w.log(), READY_TIMEOUT, lambda: f"the ready event in the log: {w.log()}")
    finally:
        w.close()


# --- asgi_app ------------------------------------------------------------------------------------


def test_asgi_routes_and_lifespan_state(tmp_path: Path) -> None:
    env = {"MWTUI_TEST_MARKERS": str(tmp_path)}
    with replica("worker_asgi.py", "api", env) as w, w.client("api") as c:
        assert (tmp_path / "order.txt").read_text() == "startup\n"  # before ready
        assert c.get("/items/5").json() == {"item_id": 5}
        # Each request gets its own copy of the lifespan's state.
        assert c.get("/state").json() == {"greeting": "from lifespan"}
        assert c.get("/state").json() == {"greeting": "from lifespan"}
        assert c.get("/nope").status_code == 404
        # The gateway's X-Forwarded-* are trusted: the app sees the real client, as behind Modal's edge.
        r = c.get("/client", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
        assert r.json() == {"host": "203.0.113.7", "scheme": "https"}
        assert w.signal() == 0
    assert (tmp_path / "order.txt").read_text() == "startup\nshutdown\n"


def test_lifespan_shutdown_failure_exits_1() -> None:
    with replica("worker_asgi.py", "bad_shutdown") as w:
        assert w.signal() == 1
        log = w.log()
        assert "mwtui: endpoint `bad_shutdown`: ASGI lifespan shutdown failed" in log
        assert "RuntimeError: could not flush the cache" in log


def test_asgi_websocket() -> None:
    from websockets.sync.client import unix_connect

    with replica("worker_asgi.py", "api") as w:
        path = w.address("api").removeprefix("unix:")
        with unix_connect(path, "ws://replica/ws") as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "echo: hi (from lifespan)"


def test_asgi_app_without_lifespan_support() -> None:
    with replica("worker_asgi.py", "raw") as w, w.client("raw") as c:
        assert c.get("/anything").text == "raw asgi"


def test_class_lifecycle_order_on_sigterm(tmp_path: Path) -> None:
    env = {"MWTUI_TEST_MARKERS": str(tmp_path)}
    with replica("worker_asgi.py", "Svc", env) as w:
        assert w.message["upstreams"]["Svc.web"]["dispatch"] == "Svc.web"
        with w.client("Svc.web") as c:
            assert c.get("/", headers={"x-mwtui-endpoint": "Svc.web"}).json() == {"started_by": "enter"}
        assert w.signal() == 0
    assert (tmp_path / "order.txt").read_text().split() == ["enter", "startup", "shutdown", "exit"]


# --- wsgi_app ------------------------------------------------------------------------------------


def test_wsgi_flask_through_gunicorn() -> None:
    with replica("worker_wsgi.py", "flask_app") as w, w.client("flask_app") as c:
        assert w.message["pid"] == w.proc.pid
        assert w.message["upstreams"]["flask_app"]["dispatch"] is None
        r = c.get("/")
        assert r.status_code == 200
        assert r.text == "hello from flask"
        assert c.post("/echo", json={"x": 1}).json() == {"got": {"x": 1}}
        # The factory ran in gunicorn's worker, a child of the replica process.
        worker_pid = c.get("/pid").json()["pid"]
        assert worker_pid != w.proc.pid
        assert psutil.Process(worker_pid).ppid() == w.proc.pid
        assert w.signal() == 0
        eventually(lambda: gone(worker_pid), 10, "the worker gone")


# --- web_server ----------------------------------------------------------------------------------


def test_web_server_directory_listing() -> None:
    port = free_port()
    with replica("worker_web_server.py", "files", {"MWTUI_TEST_PORT": str(port)}) as w:
        assert w.message["upstreams"] == {"files": {"address": f"tcp:127.0.0.1:{port}", "dispatch": None}}
        with w.client("files") as c:
            r = c.get("/")
            assert r.status_code == 200
            assert "worker_web_server.py" in r.text
        server = next(p for p in psutil.Process(w.proc.pid).children() if "http.server" in p.cmdline())
        assert w.signal() == 0
        eventually(lambda: gone(server.pid), 10, "the server gone")  # the replica asked its group to stop too


def test_web_server_that_dies_stops_the_replica() -> None:
    port = free_port()
    with replica("worker_web_server.py", "files", {"MWTUI_TEST_PORT": str(port)}) as w:
        server = next(p for p in psutil.Process(w.proc.pid).children() if "http.server" in p.cmdline())
        server.kill()
        assert w.proc.wait(EXIT_TIMEOUT) == 1
        assert f"nothing accepts connections on port {port} any more" in w.log()


def test_web_server_blocking_function() -> None:
    port = free_port()
    with replica("worker_web_server.py", "blocking", {"MWTUI_TEST_PORT": str(port)}) as w, w.client("blocking") as c:
        assert c.get("/").text == "blocking server"


def test_web_server_timeout() -> None:
    port = free_port()
    msg, code = failed("worker_web_server.py", "silent", {"MWTUI_TEST_PORT": str(port)})
    assert code == 3
    assert msg["stage"] == "web_server"
    assert msg["endpoint"] == "silent"
    assert msg["message"] == (
        f"endpoint `silent`: Waited too long for port {port} to start accepting connections. Make sure the "
        "web server is bound to 0.0.0.0 (rather than localhost or 127.0.0.1), or adjust `startup_timeout`."
    )


def test_web_server_port_busy() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        msg, code = failed("worker_web_server.py", "files", {"MWTUI_TEST_PORT": str(port)})
    assert code == 3
    assert msg["stage"] == "web_server"
    assert f"port {port} is already in use by pid {os.getpid()} (" in msg["message"]
    assert "pytest" in msg["message"] or sys.executable in msg["message"]


def test_web_server_function_raising() -> None:
    port = free_port()
    msg, code = failed("worker_web_server.py", "crashing", {"MWTUI_TEST_PORT": str(port)})
    assert code == 3
    assert msg["stage"] == "web_server"
    line = line_of("worker_web_server.py", 'raise RuntimeError("could not start the server")')
    assert msg["message"] == (
        "endpoint `crashing`: the @modal.web_server function raised RuntimeError: could not start the "
        f"server (at worker_web_server.py:{line})"
    )
    assert "RuntimeError: could not start the server" in msg["traceback"]


# --- classes -------------------------------------------------------------------------------------


def test_class_shares_state_across_methods_and_dispatches() -> None:
    with replica("worker_cls.py", "MyAPI") as w:
        ups = w.message["upstreams"]
        assert list(ups) == ["MyAPI.hello", "MyAPI.incr", "MyAPI.count", "MyAPI.web", "MyAPI.legacy"]
        addresses = {u["address"] for u in ups.values()}
        assert addresses == {f"unix:{w.sock_dir}/MyAPI.0.sock"}
        assert all(u["dispatch"] == name for name, u in ups.items())

        def to(name: str) -> dict[str, str]:
            return {"x-mwtui-endpoint": name}

        with w.client("MyAPI.hello") as c:
            assert c.get("/", headers=to("MyAPI.hello")).json() == {"greeting": "hi from enter"}
            assert c.post("/", headers=to("MyAPI.incr")).json() == {"count": 1}
            assert c.post("/", headers=to("MyAPI.incr")).json() == {"count": 2}
            assert c.get("/", headers=to("MyAPI.count")).json() == {"count": 2}
            assert c.get("/", headers=to("MyAPI.web")).json() == {"greeting": "hi from enter", "count": 2}
            assert c.get("/", headers=to("MyAPI.legacy")).text == "flask sees count=2"
            names = c.get("/headers", headers=to("MyAPI.web")).json()
            assert "x-mwtui-endpoint" not in names and "host" in names
            # Each method keeps its own routing: incr is POST-only.
            assert c.get("/", headers=to("MyAPI.incr")).status_code == 405

            r = c.get("/")
            assert r.status_code == 404
            assert "missing x-mwtui-endpoint header" in r.text
            assert "MyAPI.hello, MyAPI.incr, MyAPI.count, MyAPI.web, MyAPI.legacy" in r.text
            r = c.get("/", headers=to("MyAPI.nope"))
            assert r.status_code == 404
            assert "no endpoint `MyAPI.nope`" in r.text


def test_class_with_web_server_method() -> None:
    port = free_port()
    with replica("worker_cls.py", "Mixed", {"MWTUI_TEST_PORT": str(port)}) as w:
        assert w.message["upstreams"] == {
            "Mixed.ping": {"address": f"unix:{w.sock_dir}/Mixed.0.sock", "dispatch": "Mixed.ping"},
            "Mixed.files": {"address": f"tcp:127.0.0.1:{port}", "dispatch": None},
        }
        with w.client("Mixed.ping") as c:
            assert c.get("/", headers={"x-mwtui-endpoint": "Mixed.ping"}).json() == "pong"
        with w.client("Mixed.files") as c:
            assert "worker_cls.py" in c.get("/").text


def test_class_enter_sync_and_async() -> None:
    with replica("worker_cls.py", "Lifecycle") as w, w.client("Lifecycle.events") as c:
        r = c.get("/", headers={"x-mwtui-endpoint": "Lifecycle.events"})
        assert r.json() == ["sync enter ran asyncio.run", "async enter awaited"]


def test_stop_during_startup(tmp_path: Path) -> None:
    w = Worker("worker_cls.py", "SlowStart", {"MWTUI_TEST_MARKERS": str(tmp_path)})
    try:
        eventually(lambda: (tmp_path / "entering").exists(), READY_TIMEOUT, lambda: f"the entering marker: {w.log()}")
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(EXIT_TIMEOUT) == 0
        assert os.read(w.ready_r, 65536) == b""  # never ready, and not a failure either
        assert (tmp_path / "exited").exists()  # @enter completed, so @exit runs
    finally:
        w.close()


# --- failures ------------------------------------------------------------------------------------


def test_factory_raising() -> None:
    msg, code = failed("worker_fail.py", "boom")
    assert code == 3
    assert msg["stage"] == "build"
    assert msg["endpoint"] == "boom"
    line = line_of("worker_fail.py", 'raise ValueError("factory exploded")')
    assert msg["message"] == (
        "endpoint `boom`: the @modal.asgi_app factory raised ValueError: factory exploded "
        f"(at worker_fail.py:{line})"
    )
    assert msg["traceback"].startswith("Traceback (most recent call last):")
    assert "ValueError: factory exploded" in msg["traceback"]


def test_missing_package_in_gunicorn_worker() -> None:
    msg, code = failed("worker_fail.py", "needs_pkg")
    assert code == 3
    assert msg["stage"] == "build"
    assert msg["endpoint"] == "needs_pkg"
    line = line_of("worker_fail.py", "import mwtui_missing_pkg")
    assert msg["message"] == (
        "endpoint `needs_pkg` needs package `mwtui_missing_pkg`, which is not installed (No module named "
        f"'mwtui_missing_pkg'): pip install mwtui_missing_pkg — imported at worker_fail.py:{line}"
    )
    assert "ModuleNotFoundError" in msg["traceback"]


def test_image_imports_error_is_raised_in_the_replica() -> None:
    msg, code = failed("worker_fail.py", "uses_image")
    assert code == 3
    assert msg["stage"] == "import"
    assert msg["message"].startswith(
        "endpoint `uses_image` needs package `mwtui_not_installed_pkg`, which is not installed"
    )


def test_lifespan_startup_failure() -> None:
    msg, code = failed("worker_fail.py", "bad_lifespan")
    assert code == 3
    assert msg["stage"] == "lifespan"
    line = line_of("worker_fail.py", 'raise RuntimeError("database unreachable")')
    assert msg["message"] == (
        "endpoint `bad_lifespan`: ASGI lifespan startup failed: RuntimeError: database unreachable "
        f"(at worker_fail.py:{line})"
    )


def test_enter_failure() -> None:
    msg, code = failed("worker_fail.py", "Broken")
    assert code == 3
    assert msg["stage"] == "enter"
    assert msg["endpoint"] is None
    line = line_of("worker_fail.py", 'raise RuntimeError("no model file")')
    assert msg["message"] == (
        "class `Broken`: @modal.enter method `setup` raised RuntimeError: no model file "
        f"(at worker_fail.py:{line})"
    )


def test_import_failure_names_the_package() -> None:
    msg, code = failed("worker_import_error.py", "hello")
    assert code == 3
    assert msg["stage"] == "import"
    assert msg["endpoint"] == "hello"
    line = line_of("worker_import_error.py", "import mwtui_remote_only_pkg")
    assert msg["message"] == (
        "endpoint `hello` needs package `mwtui_remote_only_pkg`, which is not installed (No module named "
        f"'mwtui_remote_only_pkg'): pip install mwtui_remote_only_pkg — imported at worker_import_error.py:{line}"
    )


def test_fastapi_missing(tmp_path: Path) -> None:
    # A `fastapi` that cannot be imported, ahead of the installed one on the path.
    (tmp_path / "fastapi.py").write_text("raise ModuleNotFoundError(\"No module named 'fastapi'\", name='fastapi')\n")
    msg, code = failed("worker_fastapi.py", "hello", {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))})
    assert code == 3
    assert msg["stage"] == "build"
    assert msg["endpoint"] == "hello"
    assert msg["message"] == (
        "endpoint `hello`: Modal functions decorated with `fastapi_endpoint` require FastAPI to be installed "
        'in the modal.Image. Please update your Image definition code, e.g. with `.pip_install("fastapi[standard]")`.'
    )


def test_unknown_pool() -> None:
    msg, code = failed("worker_fastapi.py", "nope")
    assert code == 3
    assert msg["stage"] == "import"
    assert re.match(r"`nope` is not defined in worker_fastapi.py; its functions and classes are: .*hello",
                    msg["message"])


# --- lifeline ------------------------------------------------------------------------------------


def test_lifeline_takes_the_whole_group_down() -> None:
    port = free_port()
    w = Worker("worker_web_server.py", "files", {"MWTUI_TEST_PORT": str(port)})
    try:
        assert w.wait_message()["event"] == "ready", w.log()
        children = psutil.Process(w.proc.pid).children(recursive=True)
        server = next(p for p in children if "http.server" in p.cmdline())
        os.close(w.lifeline_w)  # as if mwtui died
        w.proc.wait(EXIT_TIMEOUT)
        assert w.proc.returncode == -signal.SIGKILL
        eventually(lambda: gone(server.pid), 10, "the server gone")
    finally:
        w.lifeline_w = -1
        w.close()


def test_lifeline_takes_gunicorn_worker_down() -> None:
    w = Worker("worker_wsgi.py", "flask_app")
    try:
        assert w.wait_message()["event"] == "ready", w.log()
        workers = psutil.Process(w.proc.pid).children()
        assert workers
        os.close(w.lifeline_w)
        w.proc.wait(EXIT_TIMEOUT)
        for p in workers:
            eventually(lambda p=p: gone(p.pid), 10, f"worker {p.pid} gone")
    finally:
        w.lifeline_w = -1
        w.close()


# --- pools that other pools call (issue 18): the replica takes calls on its socket ----------------------


def _call(client: httpx.Client, method: str | None, *args: Any, endpoint: str | None = None) -> Any:
    headers = {"content-type": CONTENT_TYPE, **({"x-mwtui-endpoint": endpoint} if endpoint else {})}
    r = client.post("/", content=encode_call(Call(method, args, {})), headers=headers)
    assert r.status_code == 200, r.text
    return decode_reply(r.content)


def test_a_function_without_a_web_decorator_takes_calls() -> None:
    install_sdk()  # as in a calling replica: Modal's exceptions come back as modal.exception's
    with replica("worker_calls.py", "square") as w:
        assert w.message["upstreams"]["square"]["dispatch"] is None
        with w.client("square") as c:
            assert _call(c, None, 7) == 49
    with replica("worker_calls.py", "fails") as w:
        with w.client("fails") as c, pytest.raises(KeyError, match="missing") as info:
            _call(c, None)
        assert "in fails" in "".join(info.value.__notes__)


def test_a_class_takes_calls_to_its_methods_beside_its_web_method_with_one_instance() -> None:
    with replica("worker_calls.py", "Counter") as w:
        assert set(w.message["upstreams"]) == {"Counter.web", "Counter"}
        assert w.message["upstreams"]["Counter"]["dispatch"] == "Counter"
        with w.client("Counter") as c:
            first = _call(c, "add", 2, endpoint="Counter")
            second = _call(c, "add", 3, endpoint="Counter")
            assert (first["n"], second["n"], second["entered"]) == (2, 5, 1)  # @enter once per container
            assert _call(c, "peek", endpoint="Counter") == 5  # an async method, on the replica's loop
            assert c.get("/", headers={"x-mwtui-endpoint": "Counter.web"}).json() == {"n": 5}
            r = c.post("/", content=encode_call(Call("start", (), {})),
                       headers={"x-mwtui-endpoint": "Counter", "content-type": CONTENT_TYPE})
            assert r.status_code == 404  # @enter is not a @modal.method: not callable from outside


def test_an_async_call_past_its_timeout_is_cancelled_and_the_replica_serves_on() -> None:
    with replica("worker_calls.py", "Sleeper") as w, w.client("Sleeper") as c:
        r = c.post("/", content=encode_call(Call("nap", (30,), {})), headers={"x-mwtui-endpoint": "Sleeper", "content-type": CONTENT_TYPE})
        assert r.status_code == 504  # its timeout of 1 s, as for a web request
        after = _call(c, "naps_cancelled", endpoint="Sleeper")
        assert after["cancelled"] == [30] and after["pid"] == w.proc.pid  # cancelled, not retired
        assert _call(c, "nap", 0, endpoint="Sleeper") == "woke"


def test_a_synchronous_call_past_its_timeout_retires_the_replica() -> None:
    with replica("worker_calls.py", "Sleeper") as w, w.client("Sleeper") as c:
        r = c.post("/", content=encode_call(Call("snooze", (30,), {})), headers={"x-mwtui-endpoint": "Sleeper", "content-type": CONTENT_TYPE})
        assert r.status_code == 504
        assert w.proc.wait(EXIT_TIMEOUT) == RETIRED_EXIT_CODE  # its thread ran on: the replica went
