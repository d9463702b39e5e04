"""`mwtui serve` on every example of the seed: real replicas, real gateway, real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import Served, alive_pids, free_port, start_serve, stop_serve
from .eventually import eventually


def test_prints_one_line_per_endpoint_with_its_url(seed_served: Served) -> None:
    out = "\n".join(seed_served.lines)
    port = seed_served.port
    assert f"=> http://seed-hello.localhost:{port}" in out
    assert f"=> http://my-endpoint.localhost:{port}" in out
    assert f"=> http://seed-myapi-health.localhost:{port}" in out
    assert "custom domain: http://api.example.com" in out


def test_fastapi_get(seed_served: Served) -> None:
    r = seed_served.get("seed-hello")
    assert r.status_code == 200
    assert r.json() == {"message": "Hello, world!"}


def test_fastapi_post_dict_body_on_label(seed_served: Served) -> None:
    r = seed_served.post("my-endpoint", json={"a": 1, "b": [2, 3]})
    assert r.status_code == 200
    assert r.json() == {"processed": {"a": 1, "b": [2, 3]}}


def test_label_is_case_insensitive_and_port_ignored(seed_served: Served) -> None:
    with seed_served.client("My-Endpoint.LOCALHOST:1") as c:
        assert c.post("/", json={"x": 1}).json() == {"processed": {"x": 1}}


def test_custom_domains(seed_served: Served) -> None:
    with seed_served.client("api.example.com") as c:
        assert c.post("/", json={"d": 1}).json() == {"processed": {"d": 1}}
    for domain in ("api.mycompany.com", "api-v2.mycompany.com"):
        with seed_served.client(domain) as c:
            assert c.get("/").json() == {"version": "2.0"}


def test_docs_on_and_off(seed_served: Served) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert seed_served.get("my-endpoint", path).status_code == 200, path
        assert seed_served.get("seed-hello", path).status_code == 404, path


def test_wrong_method_is_405(seed_served: Served) -> None:
    r = seed_served.post("seed-hello", json={})
    assert r.status_code == 405
    assert seed_served.get("my-endpoint").status_code == 405


def test_cors_preflight_echoes_origin(seed_served: Served) -> None:
    with seed_served.client(f"seed-hello.localhost:{seed_served.port}") as c:
        r = c.options(
            "/",
            headers={"Origin": "http://e.com", "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "x-custom"},
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://e.com"
        assert r.headers["access-control-allow-credentials"] == "true"
        assert "x-custom" in r.headers["access-control-allow-headers"].lower()
        g = c.get("/", headers={"Origin": "http://e.com"})
        assert g.headers["access-control-allow-origin"] == "http://e.com"


def test_asgi_routes(seed_served: Served) -> None:
    assert seed_served.get("seed-create-app").json() == {"message": "Welcome"}
    r = seed_served.post("seed-create-app", "/items", json={"name": "x"})
    assert r.json() == {"created": {"name": "x"}}
    assert seed_served.get("my-api").json() == {"message": "my-api"}
    with seed_served.client("asgi.example.com") as c:
        assert c.get("/").json() == {"message": "my-api"}


def test_flask_routes(seed_served: Served) -> None:
    r = seed_served.get("seed-create-flask")
    assert r.status_code == 200 and r.text == "Hello from Flask!"
    assert seed_served.get("seed-create-flask", "/api/data").json() == {"data": [1, 2, 3]}
    assert seed_served.get("flask-app").text == "Hello from labelled Flask!"
    with seed_served.client("www.example.com") as c:
        assert c.get("/").text == "Hello from labelled Flask!"


def test_web_server_directory_listing(seed_served: Served) -> None:
    r = seed_served.get("seed-file-server")
    assert r.status_code == 200
    assert "Directory listing for /" in r.text
    assert "etc/" in r.text  # it serves `/`, as the seed's example asks
    r = seed_served.get("my-server")
    assert r.status_code == 200 and "Directory listing" in r.text
    with seed_served.client("files.example.com") as c:
        assert "Directory listing" in c.get("/").text


def test_class_methods_share_state(seed_served: Served) -> None:
    before = seed_served.get("seed-myapi-health").json()["processed"]
    r = seed_served.post("seed-myapi-process", json={"k": "v"})
    assert r.json() == {"processed": {"k": "v"}}
    after = seed_served.get("seed-myapi-health").json()
    assert after == {"status": "healthy", "processed": before + 1}


def test_deprecated_web_endpoint_works_and_warns(seed_served: Served) -> None:
    assert seed_served.get("seed-old-handler").json() == {"data": "value"}
    assert any("web_endpoint" in line and "fastapi_endpoint" in line for line in seed_served.lines)


def test_proxy_auth_refuses_without_a_valid_token(seed_served: Served) -> None:
    r = seed_served.post("seed-secure-endpoint", json={})
    assert r.status_code == 401
    assert r.text == "modal-http: missing credentials for proxy authorization"
    r = seed_served.post("seed-secure-endpoint", json={}, headers={"Modal-Key": "wk-x", "Modal-Secret": "ws-y"})
    assert r.status_code == 401
    assert r.text == "modal-http: invalid credentials for proxy authorization"


def test_unknown_host_is_404_listing_labels(seed_served: Served) -> None:
    r = seed_served.get("no-such-label")
    assert r.status_code == 404
    assert "seed-hello" in r.text and "my-endpoint" in r.text


def test_status_json(seed_served: Served) -> None:
    status = {e["name"]: e for e in seed_served.status()}
    assert set(status) >= {"hello", "handler", "MyAPI.health", "MyAPI.process", "file_server", "create_flask"}
    seed_served.get("seed-hello")
    e = {e["name"]: e for e in seed_served.status()}["hello"]
    for key in ("name", "label", "kind", "url", "state", "replicas", "inflight", "rps", "p50_ms", "p95_ms",
                "requests_total", "errors_total", "cpu_percent", "rss_bytes", "last_error"):
        assert key in e, key
    assert e["state"] == "running" and e["kind"] == "fastapi" and e["label"] == "seed-hello"
    assert e["replicas"]["ready"] == 1 and e["replicas"]["desired"] == 1
    # Memory is sampled once a second: a replica that just became ready may not have been yet.
    seed_served.wait_status("hello's memory sampled", lambda rows: rows["hello"]["rss_bytes"] > 0, 10)


def test_each_endpoint_has_its_own_port(seed_served: Served) -> None:
    hello = {e["name"]: e for e in seed_served.status()}["hello"]
    assert hello["own_url"]
    r = httpx.get(hello["own_url"] + "/", timeout=10)
    assert r.json() == {"message": "Hello, world!"}


def _descendants(served: Served) -> set[int]:
    pids = served.tree_pids()
    assert len(pids) > 3, "expected a gateway and replicas"
    return pids


def _small_app(tmp_path: Path) -> Path:
    port = free_port()
    app = tmp_path / "small.py"
    app.write_text(
        "import subprocess, time\nimport modal\napp = modal.App('small')\n"
        "@app.function()\n@modal.fastapi_endpoint()\ndef slow(s: float = 0):\n"
        "    time.sleep(s)\n    return {'slept': s}\n"
        "@app.function()\n@modal.wsgi_app()\ndef w():\n"
        "    def wsgi(environ, start):\n        start('200 OK', [('Content-Type', 'text/plain')])\n"
        "        return [b'ok']\n    return wsgi\n"
        f"@app.function()\n@modal.web_server({port})\ndef srv():\n"
        f"    subprocess.Popen(['python', '-m', 'http.server', '{port}'])\n"
    )
    return app


def test_sigterm_drains_in_flight_and_leaves_no_process(tmp_path: Path) -> None:
    served = start_serve(_small_app(tmp_path))
    served.wait_running()
    pids = _descendants(served)
    result: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", served.get("small-slow", params={"s": 1.5})))
    t.start()
    # Stop only once the gateway has the request in flight: that is what the drain is about.
    served.wait_status("the slow request in flight", lambda rows: rows["slow"]["inflight"] == 1, 10)
    assert stop_serve(served, signal.SIGTERM) == 0
    t.join(10)
    assert result["r"].status_code == 200 and result["r"].json() == {"slept": 1.5}
    assert alive_pids(pids) == set()


def test_sighup_of_a_closed_terminal_stops_cleanly(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"  # the engine's temporary folders land here, to be counted
    tmp.mkdir()
    served = start_serve(_small_app(tmp_path), env={"TMPDIR": str(tmp)})
    served.wait_running()
    pids = _descendants(served)
    assert stop_serve(served, signal.SIGHUP) == 0
    assert "stopping: draining in-flight requests" in "\n".join(served.lines)
    assert alive_pids(pids) == set()
    assert not [p for p in tmp.iterdir() if p.name.startswith("mwtui-")]


def test_sigkill_leaves_no_process(tmp_path: Path) -> None:
    served = start_serve(_small_app(tmp_path))
    served.wait_running()
    pids = _descendants(served)
    stop_serve(served, signal.SIGKILL)
    eventually(lambda: alive_pids(pids) == set(), 10, lambda: f"every process gone; alive: {alive_pids(pids)}")


def test_busy_gateway_port_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "mwtui.tui.cli", "serve", str(_small_app(tmp_path)), "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 1
    assert str(port) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_list_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "list", str(_small_app(tmp_path)), "--json", "--port", "9999"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["app"] == "small"
    eps = {e["name"]: e for e in data["endpoints"]}
    assert eps["slow"]["kind"] == "fastapi" and eps["slow"]["method"] == "GET"
    assert eps["slow"]["url"] == "http://small-slow.localhost:9999"
    assert eps["w"]["kind"] == "wsgi" and eps["srv"]["kind"] == "web_server"
    for key in ("label", "docs", "requires_proxy_auth", "custom_domains", "port", "startup_timeout",
                "min_containers", "max_containers", "buffer_containers", "scaledown_window", "max_inputs",
                "target_inputs"):
        assert key in eps["slow"], key
    assert data["warnings"] == []


def test_list_shows_a_parametrized_class_parameters() -> None:
    app = str(Path(__file__).parent / "fixtures" / "api_params.py")
    text = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "list", app], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "(class parameters from the query: name, times=1, loud=false, tag=\"t\")" in text
    data = json.loads(subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "list", app, "--json"],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    [greet] = data["endpoints"]
    assert greet["parameters"][:2] == [{"name": "name", "type": "str"}, {"name": "times", "type": "int", "default": 1}]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import modal\napp = modal.App()\n@app.function()\n@modal.asgi_app()\nasync def f():\n    pass\n",
         ["can't be applied to an async function", "f"]),
        ("import modal\napp = modal.App()\ndef f(:\n", ["line 3"]),
        ("import modal\nimport flask_not_installed_xyz\napp = modal.App()\n", ["flask_not_installed_xyz"]),
    ],
)
def test_list_reports_broken_files(tmp_path: Path, source: str, expected: list[str]) -> None:
    app = tmp_path / "broken.py"
    app.write_text(source)
    proc = subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "list", str(app)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "broken.py" in proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert "Traceback (most recent call last)" not in proc.stderr


def test_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mwtui.tui.cli", "list", str(tmp_path / "nope.py")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1 and "nope.py" in proc.stderr


def test_a_failing_endpoint_shows_its_traceback_and_the_rest_keeps_serving(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        app = tmp_path / "mixed.py"
        app.write_text(
            "import modal\napp = modal.App('mixed')\n"
            "@app.function()\n@modal.fastapi_endpoint()\ndef good():\n    return 'ok'\n"
            "@app.function()\n@modal.asgi_app()\ndef bad():\n    raise ValueError('factory exploded')\n"
            f"@app.function()\n@modal.web_server({busy})\ndef taken():\n    pass\n"
        )
        # Host mode: the web_server shares the host's network, where the port is taken. (With a network
        # of its own, tests/test_network.py, the host's port does not matter.)
        served = start_serve(app, "--no-container")
        try:
            status = {e["name"]: e for e in served.wait_running()}
            assert status["good"]["state"] == "running"
            assert served.get("mixed-good").json() == "ok"
            assert status["bad"]["state"] == "failed"
            assert "factory exploded" in status["bad"]["last_error"]
            assert "mixed.py" in status["bad"]["last_error"]  # the traceback points into the user's file
            assert status["taken"]["state"] == "failed"
            assert str(busy) in status["taken"]["last_error"] and "already in use" in status["taken"]["last_error"]
            r = served.get("mixed-bad")
            assert r.status_code == 503 and "factory exploded" in r.text
        finally:
            stop_serve(served)


def test_a_crashed_replica_is_restarted(tmp_path: Path) -> None:
    served = start_serve(_small_app(tmp_path))
    try:
        served.wait_running()
        slow = {e["name"]: e for e in served.status()}["slow"]
        assert slow["restarts"] == 0
        pid = slow["replica_list"][0]["pid"]
        psutil.Process(pid).kill()
        slow = served.wait_status("slow restarted once and running",
                                  lambda rows: rows["slow"]["restarts"] == 1 and rows["slow"]["state"] == "running",
                                  20)["slow"]
        assert "ended unexpectedly" in slow["last_error"]
        assert served.get("small-slow").json() == {"slept": 0.0}
    finally:
        stop_serve(served)


def test_module_form_and_get_web_url(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "web.py").write_text(
        "import modal\napp = modal.App('mm')\n"
        "@app.function()\n@modal.fastapi_endpoint()\ndef hi():\n    return {'url': hi.get_web_url()}\n"
    )
    served = start_serve("pkg.web", module=True, cwd=tmp_path)
    try:
        served.wait_running()
        assert served.get("mm-hi").json() == {"url": f"http://mm-hi.localhost:{served.port}"}
    finally:
        stop_serve(served)


def test_gateway_limit_flags_reach_the_gateway(tmp_path: Path) -> None:
    served = start_serve(_small_app(tmp_path), "--max-body", "1K", "--no-reload")
    try:
        served.wait_running()
        assert served.get("small-slow").status_code == 200
        r = served.post("small-w", content=b"x" * 4096)
        assert r.status_code == 413
    finally:
        stop_serve(served)
