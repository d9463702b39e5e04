"""discover(): a real subprocess imports the file; the manifest or a readable error comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from mwtui.engine.discovery import discover, discover_async
from mwtui.engine.lifeline import ENV_FD as LIFELINE_ENV_FD
from mwtui.engine.lifeline import Lifeline
from mwtui.engine.loader import AppRef
from mwtui.engine.manifest import AppManifest, EndpointSpec
from mwtui.engine.spawner import ColdSpawner, ZygoteSpawner, zygote_supported

from .eventually import eventually, eventually_async

FIXTURES = Path(__file__).parent / "fixtures"
EVERY_KIND = AppRef(str(FIXTURES / "sdk_every_kind.py"))


def _write(tmp_path: Path, body: str, name: str = "app.py") -> AppRef:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return AppRef(str(path))


def _error(ref: AppRef, timeout: float = 30.0) -> tuple[str, str, int | None]:
    m = discover(ref, timeout)
    assert m.error is not None, m
    assert "\n" not in m.error.message  # one paragraph
    return m.error.message, m.error.file, m.error.line


# ---------------------------------------------------------------- a good file


def _expected_every_kind() -> tuple[EndpointSpec, ...]:
    src = "sdk_every_kind.py"
    return (
        EndpointSpec(name="hello", pool="hello", kind="fastapi", label="every-kind-hello", method="GET",
                     source=f"{src}:10"),
        EndpointSpec(name="handler", pool="handler", kind="fastapi", label="my-endpoint", method="POST", docs=True,
                     requires_proxy_auth=True, custom_domains=("api.example.com", "api-v2.example.com"),
                     min_containers=1, max_containers=3, scaledown_window=30, timeout=60, max_inputs=8,
                     target_inputs=4, source=f"{src}:16"),
        EndpointSpec(name="create_asgi", pool="create_asgi", kind="asgi", label="my-api", buffer_containers=2,
                     source=f"{src}:29"),
        EndpointSpec(name="flask_app", pool="flask_app", kind="wsgi", label="every-kind-flask-app",
                     custom_domains=("www.example.com",), source=f"{src}:43"),
        EndpointSpec(name="file_server", pool="file_server", kind="web_server", label="my-server", port=8000,
                     startup_timeout=10.0, source=f"{src}:51"),
        EndpointSpec(name="MyAPI.health", pool="MyAPI", kind="fastapi", label="every-kind-myapi-health",
                     method="GET", min_containers=2, max_inputs=5, target_inputs=5, source=f"{src}:64"),
        EndpointSpec(name="MyAPI.process", pool="MyAPI", kind="fastapi", label="every-kind-myapi-process",
                     method="POST", requires_proxy_auth=True, min_containers=2, max_inputs=5, target_inputs=5,
                     source=f"{src}:68"),
        # Called by other pools, not by URL: its @modal.method, and a plain function.
        EndpointSpec(name="MyAPI", pool="MyAPI", kind="cls", label="myapi.every-kind.call", min_containers=2,
                     max_inputs=5, target_inputs=5, source=f"{src}:72"),
        EndpointSpec(name="plain", pool="plain", kind="function", label="plain.every-kind.call", source=f"{src}:77"),
    )


def test_every_kind_exact_manifest() -> None:
    m = discover(EVERY_KIND)
    assert m.error is None and m.warnings == ()
    assert (m.app_name, m.file, m.app_var) == ("every-kind", EVERY_KIND.path, None)
    assert m.endpoints == _expected_every_kind()
    assert [(p.name, p.server, [e.name for e in p.endpoints]) for p in m.pools()] == [
        ("hello", "uvicorn", ["hello"]),
        ("handler", "uvicorn", ["handler"]),
        ("create_asgi", "uvicorn", ["create_asgi"]),
        ("flask_app", "gunicorn", ["flask_app"]),
        ("file_server", "web_server", ["file_server"]),
        ("MyAPI", "uvicorn", ["MyAPI.health", "MyAPI.process", "MyAPI"]),
        ("plain", "uvicorn", ["plain"]),
    ]
    assert AppManifest.from_json(m.to_json()) == m


async def test_discover_async() -> None:
    m = await discover_async(EVERY_KIND)
    assert m.error is None and [e.name for e in m.endpoints][:2] == ["hello", "handler"]


async def test_blocking_discover_inside_a_running_loop() -> None:
    m = discover(EVERY_KIND)
    assert m.error is None and len(m.endpoints) == 9


def test_app_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App()

        @app.function()
        @modal.fastapi_endpoint()
        def Hello_There():
            return 1
        """, name="my_service.py")
    m = discover(ref)
    assert m.app_name == "my_service" and m.endpoints[0].label == "my-service-hello-there"


def test_app_variable_is_chosen(tmp_path: Path) -> None:
    body = """\
        import modal
        first = modal.App("first")
        second = modal.App("second")

        @first.function()
        @modal.fastapi_endpoint()
        def a():
            return 1

        @second.function()
        @modal.asgi_app()
        def b():
            return None
        """
    ref = _write(tmp_path, body)
    m = discover(AppRef(ref.path, "second"))
    assert (m.app_name, m.app_var, [e.name for e in m.endpoints]) == ("second", "second", ["b"])
    message, _, _ = _error(ref)
    assert "app.py defines several modal.App objects" in message


def test_stdout_noise_does_not_break_discovery(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import sys
        import modal
        print('{"app": "not me", "endpoints": []}')
        print("x" * 200_000)
        sys.stderr.write("noise on stderr\\n" * 1000)
        app = modal.App("noisy")

        @app.function()
        @modal.fastapi_endpoint()
        def hello():
            return 1
        print("done")
        """)
    m = discover(ref)
    assert m.error is None and m.app_name == "noisy" and [e.name for e in m.endpoints] == ["hello"]


def test_custom_label_that_is_not_dns_safe_warns(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.function()
        @modal.fastapi_endpoint(label="Bad_Label")
        def hello():
            return 1
        """)
    m = discover(ref)
    assert m.error is None and m.endpoints[0].label == "Bad_Label"
    assert m.warnings == (
        "app.py:4: hello: label 'Bad_Label' is not a valid DNS label (use only lowercase letters, digits and '-', "
        "at most 63 characters, not starting or ending with '-', not all digits); it is served locally as given, "
        "but Modal may reject it",
    )


def test_no_endpoints_is_a_warning(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import modal\napp = modal.App('x')\n")
    m = discover(ref)
    assert m.error is None and m.endpoints == ()
    assert len(m.warnings) == 1 and m.warnings[0].startswith("app.py: the app defines no functions")


def test_swallowed_image_import_is_reported(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        image = modal.Image.debian_slim().pip_install("torch")
        with image.imports():
            import mwtui_absent_pkg
        app = modal.App("x", image=image)
        """)
    m = discover(ref)
    assert m.error is None
    assert any(w.startswith("app.py:4: `with image.imports()` swallowed ModuleNotFoundError") for w in m.warnings)


def test_processes_started_at_import_do_not_outlive_discovery(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ref = _write(tmp_path, f"""\
        import subprocess, sys
        import modal
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        app = modal.App("x")
        """)
    assert discover(ref).error is None
    _assert_gone(int(pid_file.read_text()))


def _assert_gone(pid: int) -> None:
    """Killed: gone, or a zombie waiting for whoever adopted it to reap it."""

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    eventually(gone, 10, f"process {pid} started by the app file to end")


# ---------------------------------------------------------------- conflicts


def test_label_conflict_names_both_endpoints(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.function()
        @modal.fastapi_endpoint(label="same")
        def one():
            return 1

        @app.cls()
        class Two:
            @modal.fastapi_endpoint(label="same")
            def web(self):
                return 2
        """)
    message, file, line = _error(ref)
    assert message.startswith("app.py:11: The label 'same' is used by both `one` and `Two.web`")
    assert (file, line) == (ref.path, 11)


def test_custom_label_colliding_with_a_default_label(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.function()
        @modal.fastapi_endpoint()
        def hello():
            return 1

        @app.function()
        @modal.asgi_app(label="x-hello", custom_domains=["api.example.com"])
        def other():
            return None

        @app.function()
        @modal.wsgi_app(custom_domains=["API.example.com"])
        def third():
            return None
        """)
    message, _, _ = _error(ref)
    assert "The label 'x-hello' is used by both `hello` and `other`" in message
    assert "The custom domain 'API.example.com' is used by both `other` and `third`" in message


# ---------------------------------------------------------------- failures: the path


def test_missing_file(tmp_path: Path) -> None:
    message, _, _ = _error(AppRef(str(tmp_path / "nope.py")))
    assert message == f"no such file: {tmp_path / 'nope.py'}"


def test_directory(tmp_path: Path) -> None:
    message, _, _ = _error(AppRef(str(tmp_path)))
    assert message.startswith(f"{tmp_path} is a directory")


def test_not_a_python_file(tmp_path: Path) -> None:
    (tmp_path / "app.txt").write_text("hello")
    message, _, _ = _error(AppRef(str(tmp_path / "app.txt")))
    assert message == "app.txt is not a Python file: mwtui runs a Modal app file ending in .py"


# ---------------------------------------------------------------- failures: importing


def test_syntax_error(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App()
        def broken(:
            pass
        """)
    message, file, line = _error(ref)
    assert message == "app.py:3: syntax error: invalid syntax (line 3: `def broken(:`)"
    assert (file, line) == (ref.path, 3)


def test_syntax_error_in_a_sibling_module(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("x = (\n")
    ref = _write(tmp_path, "import modal\nimport helpers\napp = modal.App()\n")
    message, file, line = _error(ref)
    assert message.startswith("helpers.py:1: syntax error:")
    assert message.endswith("(imported from app.py:2)")
    assert (file, line) == (str(tmp_path / "helpers.py"), 1)


def test_missing_package_at_module_level_needs_every_endpoint(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        import cv2
        app = modal.App("x")

        @app.function()
        @modal.fastapi_endpoint()
        def a():
            return 1

        @app.cls()
        class B:
            @modal.asgi_app()
            def web(self):
                return None
        """)
    message, file, line = _error(ref)
    assert message == (
        "app.py:2: cannot import `cv2` (No module named 'cv2'); it is needed by every endpoint in app.py (a, B.web), "
        "since it is imported at module level. Install it where mwtui runs, e.g. `pip install opencv-python`."
    )
    assert (file, line) == (ref.path, 2)


def test_missing_package_in_a_class_body_names_its_endpoints(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.function()
        @modal.fastapi_endpoint()
        def light():
            return 1

        @app.function()
        @modal.fastapi_endpoint()
        def heavy():
            import sklearn
            return sklearn

        @app.cls()
        class Model:
            import sklearn.linear_model as lm

            @modal.fastapi_endpoint()
            def predict(self):
                return 1
        """)
    message, _, line = _error(ref)
    assert line == 17
    assert message.startswith("app.py:17: cannot import `sklearn` (No module named 'sklearn'); it is needed by ")
    assert "`heavy`" in message and "`Model.predict`" in message and "light" not in message
    assert message.endswith("`pip install scikit-learn`.")


def test_missing_package_through_a_sibling_module(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("import bs4\n")
    ref = _write(tmp_path, """\
        import modal
        from helpers import bs4
        app = modal.App("x")

        @app.function()
        @modal.wsgi_app()
        def site():
            return None
        """)
    message, file, line = _error(ref)
    assert message.startswith("helpers.py:1 (imported from app.py:2): cannot import `bs4`")
    assert "every endpoint in app.py (site)" in message and message.endswith("`pip install beautifulsoup4`.")
    assert (file, line) == (str(tmp_path / "helpers.py"), 1)


def test_other_exception_at_import(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.cls()
        class Model:
            ratio = 1 / 0
        """)
    message, file, line = _error(ref)
    assert message == "app.py:6, in `Model`: importing app.py raised ZeroDivisionError: division by zero"
    assert (file, line) == (ref.path, 6)
    assert "ZeroDivisionError" in discover(ref).error.traceback


def test_sys_exit_at_import(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import sys\nsys.exit('bye')\n")
    message, _, line = _error(ref)
    assert message == "app.py:2: importing app.py raised SystemExit: bye" and line == 2


def test_hard_exit_at_import(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import os\nprint('last words', flush=True)\nos._exit(3)\n")
    message, _, _ = _error(ref)
    assert message == "importing app.py exited with code 3 before discovery finished; last output: last words"


def test_no_app_in_the_file(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import modal\nx = 1\n")
    message, _, _ = _error(ref)
    assert message.startswith("app.py defines no modal.App")


def test_named_app_variable_missing(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import modal\napp = modal.App()\n")
    message, _, _ = _error(AppRef(ref.path, "other"))
    assert message == "app.py has no modal.App named `other`"


def test_hung_import_is_killed_with_its_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ref = _write(tmp_path, f"""\
        import subprocess, sys, time
        import modal
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        app = modal.App("x")
        sys.stderr.write(f'File "{{__file__}}", line 1\\n')  # looks like a stack, but is not the dump
        sys.stderr.flush()
        time.sleep(60)
        """)
    message, file, line = _error(ref, timeout=3)
    assert message.startswith("importing app.py did not finish within 3 s (it was still running app.py:8)")
    assert (file, line) == (ref.path, 8)
    _assert_gone(int(pid_file.read_text()))


def test_the_child_runs_in_the_apps_folder(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from-data")
    ref = _write(tmp_path, """\
        import modal
        app = modal.App(open("data.txt").read())
        """)
    assert discover(ref).app_name == "from-data"
    assert os.getcwd() != str(tmp_path)


async def test_concurrent_discoveries_do_not_mix(tmp_path: Path) -> None:
    refs = []
    for i in range(3):
        folder = tmp_path / f"d{i}"
        folder.mkdir()
        refs.append(_write(folder, f"import modal\napp = modal.App('app-{i}')\n"))
    results = await asyncio.gather(*(discover_async(r) for r in refs))
    assert [m.app_name for m in results] == ["app-0", "app-1", "app-2"]


def test_lifeline_is_passed_through(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import modal\napp = modal.App('alive')\n")
    lifeline = Lifeline()
    try:
        env = {**os.environ, **lifeline.env()}
        assert discover(ref, env=env, pass_fds=(lifeline.child_fd,)).app_name == "alive"
        # The variable without its fd must not make the child watch some unrelated file.
        assert discover(ref, env={**os.environ, LIFELINE_ENV_FD: "3"}).app_name == "alive"
    finally:
        lifeline.close()


# ---------------------------------------------------------------- forked from the zygote


@pytest.fixture
async def zygote() -> AsyncIterator[ZygoteSpawner]:
    if not zygote_supported():
        pytest.skip("the zygote needs os.fork and SOCK_SEQPACKET")
    spawner = ZygoteSpawner()
    yield spawner
    await spawner.close()


def _forked_by(spawner: ZygoteSpawner) -> list[int]:
    """Pids of the zygote's children: the forked discoveries still alive (or not yet reaped)."""
    assert spawner.zygote_pid is not None
    return [p.pid for p in psutil.Process(spawner.zygote_pid).children()]


def _no_sources(m: AppManifest) -> AppManifest:
    """Sources differ in what mwtui itself imported (the zygote preloads more); the user's are equal."""
    return dataclasses.replace(m, sources=tuple(s for s in m.sources if s.startswith(str(FIXTURES))))


async def test_zygote_gives_the_cold_manifest(zygote: ZygoteSpawner) -> None:
    cold = await discover_async(EVERY_KIND)
    forked = await discover_async(EVERY_KIND, spawner=zygote)
    assert zygote.zygote_pid is not None and zygote.cold_reason is None  # it really was forked
    assert forked.error is None and forked.endpoints == _expected_every_kind()
    assert _no_sources(forked) == _no_sources(cold)
    assert EVERY_KIND.path in forked.sources
    # The zygote itself never imports the user's file: only its (forked) child did.
    zygote_cmd = psutil.Process(zygote.zygote_pid).cmdline()
    assert "mwtui.engine.zygote" in zygote_cmd
    assert not any("sdk_every_kind" in f.path for f in psutil.Process(zygote.zygote_pid).open_files())


async def test_zygote_child_runs_forked_not_cold(zygote: ZygoteSpawner, tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import os, sys
        import modal
        app = modal.App(f"{os.getppid()}|{os.getpid() == os.getpgid(0)}|{os.getcwd()}|{sys.argv[1:]}")
        """)
    m = await discover_async(ref, spawner=zygote)
    parent, leader, cwd, argv = m.app_name.split("|", 3)
    assert int(parent) == zygote.zygote_pid and leader == "True" and cwd == str(tmp_path)
    assert argv.startswith("['--fd', '") and argv.endswith(f"'{ref.path}']")


async def test_zygote_broken_file_gives_the_cold_error(zygote: ZygoteSpawner, tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App()
        def broken(:
            pass
        """)
    cold = await discover_async(ref)
    forked = await discover_async(ref, spawner=zygote)
    assert zygote.cold_reason is None
    assert forked.error is not None and forked.error == cold.error
    assert forked.error.message == "app.py:3: syntax error: invalid syntax (line 3: `def broken(:`)"
    crash = _write(tmp_path, "import os\nprint('bye', flush=True)\nos._exit(3)\n", "crash.py")
    cold_crash = await discover_async(crash)
    forked_crash = await discover_async(crash, spawner=zygote)
    assert forked_crash.error is not None and cold_crash.error is not None
    assert forked_crash.error.message == cold_crash.error.message
    assert forked_crash.error.message == "importing crash.py exited with code 3 before discovery finished; last output: bye"


async def test_zygote_hung_import_is_killed_at_the_timeout(zygote: ZygoteSpawner, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ref = _write(tmp_path, f"""\
        import subprocess, sys, time
        import modal
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        app = modal.App("x")
        sys.stderr.write(f'File "{{__file__}}", line 1\\n')  # looks like a stack, but is not the dump
        sys.stderr.flush()
        time.sleep(60)
        """)
    await discover_async(EVERY_KIND, spawner=zygote)  # the zygote is up: the timeout is the child's alone
    t0 = time.monotonic()
    m = await discover_async(ref, timeout=3, spawner=zygote)
    assert time.monotonic() - t0 < 3 + 2.5
    assert m.error is not None
    assert m.error.message.startswith("importing app.py did not finish within 3 s (it was still running app.py:8)")
    assert (m.error.file, m.error.line) == (ref.path, 8)
    _assert_gone(int(pid_file.read_text()))
    # The forked child is gone too (the zygote reaps it).
    await eventually_async(lambda: _forked_by(zygote) == [], 5, lambda: f"no forked child left: {_forked_by(zygote)}")


async def test_zygote_sees_a_changed_file(zygote: ZygoteSpawner, tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("NAME = 'first'\n")
    ref = _write(tmp_path, "import modal\nimport helper\napp = modal.App(helper.NAME)\n")
    assert (await discover_async(ref, spawner=zygote)).app_name == "first"
    (tmp_path / "helper.py").write_text("NAME = 'second-version'\n")  # another size: no stale .pyc
    assert (await discover_async(ref, spawner=zygote)).app_name == "second-version"
    Path(ref.path).write_text("import modal\napp = modal.App('renamed')\n")
    assert (await discover_async(ref, spawner=zygote)).app_name == "renamed"


async def test_zygote_passes_the_lifeline(zygote: ZygoteSpawner, tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import os
        import modal
        fd = int(os.environ["MWTUI_LIFELINE_FD"])
        os.fstat(fd)  # the number names the fd the child actually has
        app = modal.App(f"alive-{fd}")
        """)
    lifeline = Lifeline()
    try:
        env = {**os.environ, **lifeline.env()}
        m = await discover_async(ref, env=env, pass_fds=(lifeline.child_fd,), spawner=zygote)
        assert m.error is None and m.app_name.startswith("alive-"), m.error
    finally:
        lifeline.close()


async def test_zygote_unavailable_falls_back_to_cold(tmp_path: Path) -> None:
    spawner = ZygoteSpawner(start_timeout=0.001)  # no zygote answers that fast: cold starts
    try:
        ref = _write(tmp_path, "import os\nimport modal\napp = modal.App(f'{os.getppid()}')\n")
        m = await discover_async(ref, spawner=spawner)
        assert spawner.cold_reason is not None and m.app_name == str(os.getpid())
    finally:
        await spawner.close()
    cold = await discover_async(ref, spawner=ColdSpawner())
    assert cold.app_name == str(os.getpid())
