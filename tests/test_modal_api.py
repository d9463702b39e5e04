"""The rest of the modal API a real web app file touches, run unchanged: images, secrets, volumes, Dict
and Queue, calls between functions, class parameters, app references. In-process where it is about the
API's shape; real replicas (the worker, or `mwtui serve`) where it is about what happens at run time."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue as std_queue
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
from pathlib import Path
from typing import Any

import httpx
import pytest
from mwtui.engine import params as params_codec
from mwtui.engine import sdk as modal
from mwtui.engine.discovery import discover
from mwtui.engine.loader import AppRef, load_app
from mwtui.engine.manifest import AppManifest
from mwtui.engine.sdk import environment, runtime
from mwtui.engine.sdk.exception import InvalidError, NotFoundError
from mwtui.engine.sdk.secret import SecretError
from mwtui.engine.store.secrets import SecretStore

from .conftest import Served, free_port, start_serve, stop_serve

FIXTURES = Path(__file__).parent / "fixtures"
READY_TIMEOUT = 30.0


# ---------------------------------------------------------------- helpers: one replica, as the supervisor runs it


def _read_line(fd: int, timeout: float) -> dict[str, Any]:
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no message from the replica within {timeout}s (got {buf!r})"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"ready pipe closed without a message (got {buf!r})"
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


class Replica:
    """`python -m mwtui.engine.worker APP --pool NAME ...` with a ready pipe and a lifeline."""

    def __init__(self, app_ref: str, pool: str, env: dict[str, str], *extra: str) -> None:
        self.sock_dir = tempfile.mkdtemp(prefix="mwa")  # AF_UNIX paths must stay short
        self.log_path = Path(self.sock_dir) / "out.log"
        self.ready_r, ready_w = os.pipe()
        lifeline_r, self.lifeline_w = os.pipe()
        full_env = {**os.environ, **env, "MWTUI_LIFELINE_FD": str(lifeline_r), "MWTUI_READY_FD": str(ready_w)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mwtui.engine.worker", app_ref, "--pool", pool, "--socket-dir",
                 self.sock_dir, "--replica", f"{pool}.0", *extra],
                cwd=FIXTURES, env=full_env, pass_fds=[lifeline_r, ready_w], start_new_session=True,
                stdout=log, stderr=subprocess.STDOUT,
            )
        os.close(ready_w)
        os.close(lifeline_r)
        self.message = _read_line(self.ready_r, READY_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, endpoint: str) -> httpx.Client:
        address = self.message["upstreams"][endpoint]["address"]
        kind, _, where = address.partition(":")
        assert kind == "unix", address
        headers = {}
        dispatch = self.message["upstreams"][endpoint]["dispatch"]
        if dispatch:
            headers["x-mwtui-endpoint"] = dispatch
        return httpx.Client(transport=httpx.HTTPTransport(uds=where), base_url="http://replica", timeout=10,
                            headers=headers)

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        for fd in (self.lifeline_w, self.ready_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        return code


@contextlib.contextmanager
def replica(app_ref: str, pool: str, env: dict[str, str], *extra: str) -> Iterator[Replica]:
    r = Replica(app_ref, pool, env, *extra)
    try:
        assert r.message["event"] == "ready", f"{r.message}\n--- output ---\n{r.log()}"
        yield r
    finally:
        r.close()


def failed(app_ref: str, pool: str, env: dict[str, str], *extra: str) -> dict[str, Any]:
    r = Replica(app_ref, pool, env, *extra)
    try:
        assert r.message["event"] == "failed", r.message
        assert r.proc.wait(20) == 3
        return r.message
    finally:
        r.close()


def discover_in(ref: AppRef | str, env: dict[str, str]) -> AppManifest:
    ref = AppRef.parse(ref) if isinstance(ref, str) else ref
    return discover(ref, env={**os.environ, **env})


def plan_of(manifest: AppManifest, pool: str) -> str:
    assert manifest.ok, manifest.error
    return next(p.plan for p in manifest.pools() if p.name == pool)


# ---------------------------------------------------------------- images


EVERY_BUILDER = [
    ("pip_install", ("fastapi", ["flask"]), {}), ("uv_pip_install", ("torch",), {"index_url": "x"}),
    ("pip_install_from_requirements", ("requirements.txt",), {}), ("pip_install_from_pyproject", ("p.toml",), {}),
    ("pip_install_private_repos", ("github.com/a/b",), {"git_user": "u", "secrets": []}),
    ("poetry_install_from_file", ("pyproject.toml",), {}), ("uv_sync", (), {}), ("apt_install", ("git", "curl"), {}),
    ("run_commands", ("echo a", "echo b"), {"gpu": "T4"}), ("run_function", (print,), {"secrets": []}),
    ("env", ({"A": "1", "N": 2},), {}), ("workdir", ("/app",), {}), ("cmd", (["python"],), {}),
    ("entrypoint", ([],), {}), ("shell", ("/bin/bash",), {}), ("dockerfile_commands", (["RUN true"],), {}),
    ("micromamba_install", ("numpy",), {"channels": ["conda-forge"]}),
    ("add_local_file", ("api_helper.py", "/root/"), {}), ("add_local_dir", ("api_assets", "/assets"), {}),
    ("add_local_python_source", ("api_helper",), {"copy": True}),
]


@pytest.mark.parametrize("ctor", [
    lambda: modal.Image.debian_slim(python_version="3.12"), lambda: modal.Image.micromamba(),
    lambda: modal.Image.from_registry("nvidia/cuda:12.4.0-devel-ubuntu22.04", add_python="3.11"),
    lambda: modal.Image.from_dockerfile("Dockerfile"), lambda: modal.Image.from_scratch(),
    lambda: modal.Image.from_id("im-123"), lambda: modal.Image.from_name("base"),
])
def test_image_accepts_every_constructor_and_builder(ctor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    image = ctor()
    for name, args, kwargs in EVERY_BUILDER:
        image = getattr(image, name)(*args, **kwargs)
    image = image.pipe(lambda img, v: img.env({"PIPED": v}), "yes")
    assert image.env_vars == {"A": "1", "N": "2", "PIPED": "yes"}
    assert [(f.kind, f.local, f.remote) for f in image.local_files] == [
        ("file", str(FIXTURES / "api_helper.py"), "/root/api_helper.py"),
        ("dir", str(FIXTURES / "api_assets"), "/assets"),
        ("python", "api_helper", "/root/api_helper"),
    ]


def test_image_refuses_relative_remote_paths_as_modal_does() -> None:
    with pytest.raises(InvalidError, match=r"image.add_local_dir\(\) currently only supports absolute remote_path"):
        modal.Image.debian_slim().add_local_dir("api_assets", "assets")
    with pytest.raises(InvalidError, match=r"image.add_local_file\(\) currently only supports absolute"):
        modal.Image.debian_slim().add_local_file("x.py", "x.py")


def test_image_imports_swallows_outside_and_keeps_the_error() -> None:
    image = modal.Image.debian_slim()
    with pytest.warns(UserWarning, match="swallowed ModuleNotFoundError"), image.imports():
        import mwtui_no_such_module  # noqa: F401
        raise AssertionError("the rest of the block is skipped")
    assert isinstance(image.import_errors[0], ModuleNotFoundError)


# ---------------------------------------------------------------- secrets and the environment


def test_environment_layers_in_modal_order(mwtui_home: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    SecretStore().set("store-secret", {"FROM_STORE": "s3cret", "SHARED": "store"})
    (tmp_path / "sub").mkdir()
    (tmp_path / ".env").write_text("FROM_DOTENV=dotenv\nSHARED=dotenv\n")
    monkeypatch.setenv("LOCAL_ONE", "local")
    image = modal.Image.debian_slim().env({"FROM_IMAGE": "image", "SHARED": "image"})
    app = modal.App("env-order", image=image, secrets=[modal.Secret.from_dict({"APP": "app", "SHARED": "app"})])
    fn = app.function(
        secrets=[modal.Secret.from_name("store-secret"), modal.Secret.from_dotenv(tmp_path / "sub"),
                 modal.Secret.from_local_environ(["LOCAL_ONE"])],
        env={"FROM_ENV": "env"},
    )(modal.fastapi_endpoint()(lambda: 1))
    assert environment.function_env(fn.options) == {
        "FROM_IMAGE": "image", "APP": "app", "FROM_STORE": "s3cret", "FROM_DOTENV": "dotenv",
        "LOCAL_ONE": "local", "FROM_ENV": "env", "SHARED": "dotenv",
    }
    # The plan carries names and paths, not the store's values; a replica resolves it to the same.
    plan = environment.plan(fn.options)
    assert {"kind": "name", "name": "store-secret", "required_keys": []} in plan["env"]
    assert "s3cret" not in json.dumps(plan)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    environment.apply_plan(json.loads(json.dumps(plan)))
    assert os.environ["FROM_STORE"] == "s3cret" and os.environ["SHARED"] == "dotenv"


def test_missing_named_secret_names_the_fix(mwtui_home: Path) -> None:
    secret = modal.Secret.from_name("openai", required_keys=["OPENAI_API_KEY", "ORG"])
    with pytest.raises(SecretError) as e:
        secret.resolve("generate")
    text = str(e.value)
    assert "Secret 'openai' (needed by `generate`) is not in mwtui's local secret store" in text
    assert "mwtui secret set openai OPENAI_API_KEY=... ORG=..." in text
    SecretStore().set("openai", {"ORG": "o"})
    with pytest.raises(SecretError) as e:
        secret.resolve()
    assert str(e.value) == (
        "Secret 'openai' is missing required key(s) OPENAI_API_KEY (it has ORG). "
        "Add them with: mwtui secret set openai OPENAI_API_KEY=..."
    )
    assert isinstance(e.value, NotFoundError)
    SecretStore().set("openai", {"OPENAI_API_KEY": "sk"})
    assert secret.resolve() == {"ORG": "o", "OPENAI_API_KEY": "sk"}


def test_secret_command_line(mwtui_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mwtui.tui.cli import main

    def mwtui(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["secret", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    assert mwtui("set", "api", "A=1", "B=x=y").returncode == 0
    (tmp_path / "vals.env").write_text("C=from-dotenv\n")
    r = mwtui("set", "api", "D=-", "--from-dotenv", str(tmp_path / "vals.env"), stdin="from-stdin\n")
    assert r.returncode == 0 and "4 key(s): A, B, C, D" in r.stdout
    assert SecretStore().get("api") == {"A": "1", "B": "x=y", "C": "from-dotenv", "D": "from-stdin"}
    listing = mwtui("list")
    assert listing.returncode == 0 and "api" in listing.stdout and "A, B, C, D" in listing.stdout
    assert "from-stdin" not in listing.stdout and "x=y" not in listing.stdout
    assert json.loads(mwtui("list", "--json").stdout) == [{"name": "api", "keys": ["A", "B", "C", "D"]}]
    bad = mwtui("set", "api", "sk-secret-value")
    assert bad.returncode == 1 and "expected KEY=VALUE" in bad.stderr
    assert mwtui("delete", "api").returncode == 0
    gone = mwtui("delete", "api")
    assert gone.returncode == 1 and "no secret 'api'" in gone.stderr
    assert (mwtui_home / "secrets.json").stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- calls between functions (in process)


def test_spawn_get_timeout_errors_and_from_id(mwtui_home: Path) -> None:
    app = modal.App("calls-unit")
    gate = threading.Event()

    def wait_then(value: str) -> str:
        assert gate.wait(10)
        return value

    def fail() -> None:
        raise KeyError("spawned failure")

    waiter = app.function(serialized=True)(wait_then)
    call = waiter.spawn("ok")
    assert call.object_id.startswith("fc-")
    with pytest.raises(TimeoutError):  # Python's own, as Modal's examples catch it...
        call.get(timeout=0)
    with pytest.raises(modal.exception.TimeoutError):  # ...and Modal's
        modal.FunctionCall.from_id(call.object_id).get(timeout=0.05)
    gate.set()
    assert call.get(timeout=10) == "ok"
    assert asyncio.run(modal.FunctionCall.from_id(call.object_id).get.aio()) == "ok"
    failing = app.function(serialized=True)(fail).spawn()
    with pytest.raises(KeyError, match="spawned failure"):
        failing.get(timeout=10)
    with pytest.raises(NotFoundError):
        modal.FunctionCall.from_id("fc-does-not-exist")
    assert modal.functions.gather(waiter.spawn("a"), waiter.spawn("b")) == ["a", "b"]


def test_map_starmap_order_and_exceptions() -> None:
    app = modal.App("map-unit")

    def slow_square(x: int) -> int:
        time.sleep(0.05 * (5 - x))
        if x == 3:
            raise ValueError("three")
        return x * x

    fn = app.function(serialized=True)(slow_square)
    assert list(fn.map(range(5), return_exceptions=True))[:3] == [0, 1, 4]
    with pytest.raises(ValueError, match="three"):
        list(fn.map(range(5)))
    unordered = list(fn.map(range(3), order_outputs=False))
    assert sorted(unordered) == [0, 1, 4] and unordered[0] == 4  # the quickest first
    adder = app.function(serialized=True, name="adder")(lambda a, b, c=0: a + b + c)
    assert list(adder.starmap([(1, 2), (3, 4)], kwargs={"c": 10})) == [13, 17]
    started = time.monotonic()
    sleeper = app.function(serialized=True, name="sleeper")(lambda x: time.sleep(0.3) or x)
    assert list(sleeper.map(range(8))) == list(range(8))
    assert time.monotonic() - started < 2.0  # in parallel, not 8 x 0.3 s


def test_generators_and_web_functions_refuse_the_wrong_call(monkeypatch: pytest.MonkeyPatch) -> None:
    app = modal.App("refusals")

    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    g = app.function(serialized=True)(gen)
    assert list(g.remote_gen(3)) == [0, 1, 2]
    with pytest.raises(InvalidError, match=r"A generator function cannot be called with `.remote\(...\)`"):
        g.remote(3)
    plain = app.function(serialized=True)(lambda: 1)
    with pytest.raises(InvalidError, match="A non-generator function cannot be called with `.remote_gen"):
        list(plain.remote_gen())

    web = app.function(name="hook")(modal.fastapi_endpoint()(lambda: 1))
    assert web.get_web_url() is None
    monkeypatch.setenv(runtime.WEB_URLS_ENV, json.dumps({"hook": "http://refusals-hook.localhost:8470"}))
    assert web.get_web_url() == web.web_url == "http://refusals-hook.localhost:8470"
    for how in ("remote", "spawn"):
        with pytest.raises(InvalidError) as e:
            getattr(web, how)()
        assert str(e.value) == (
            f"A webhook function cannot be invoked for remote execution with `.{how}`. Invoke this function "
            "via its web url 'http://refusals-hook.localhost:8470' or call it locally: hook.local()"
        )
    assert web.local() == 1
    assert plain.get_web_url() is None


def test_a_replicas_remote_call_gets_the_callees_container(mwtui_home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setenv("MODAL_IS_REMOTE", "1")  # as inside a replica
    app = modal.App("callee-unit")
    broken = modal.Image.debian_slim()
    with pytest.warns(UserWarning), broken.imports():
        import mwtui_no_such_module  # noqa: F401
    uses_broken = app.function(serialized=True, name="uses_broken", image=broken)(lambda: 1)
    with pytest.raises(modal.exception.ExecutionError, match="`uses_broken` cannot run here: an import inside"):
        uses_broken.remote()
    secretive = app.function(serialized=True, name="secretive", secrets=[modal.Secret.from_dict({"ONLY": "s"})])(
        lambda: os.environ.get("ONLY"))
    assert secretive.remote() == "s"
    missing = app.function(serialized=True, name="missing", secrets=[modal.Secret.from_name("nope")])(lambda: 1)
    with pytest.raises(SecretError, match="Secret 'nope' \\(needed by `missing`\\)"):
        missing.spawn()


# ---------------------------------------------------------------- dict, queue, volume (in process)


def test_dict_api(mwtui_home: Path) -> None:
    d = modal.Dict.from_name("unit-dict", create_if_missing=True)
    d["a"] = {"nested": [1, 2]}
    d.put(("tuple", 1), b"bytes")
    assert d.put("a", "ignored", skip_if_exists=True) is False
    d.update({"b": 2}, c=3)
    assert d["a"] == {"nested": [1, 2]} and d.get(("tuple", 1)) == b"bytes" and d.get("zz", 7) == 7
    assert "b" in d and d.contains("c") and d.len() == 4
    assert list(d.keys()) == ["a", ("tuple", 1), "b", "c"]
    assert dict(d.items())["c"] == 3 and 2 in list(d.values())
    assert d.pop("b") == 2
    with pytest.raises(KeyError):
        d.pop("b")
    with pytest.raises(KeyError):
        _ = d["b"]
    del d["c"]
    assert asyncio.run(d.get.aio("a")) == {"nested": [1, 2]}
    assert modal.Dict.from_name("unit-dict")["a"] == {"nested": [1, 2]}  # same name, same data
    d.clear()
    assert d.len() == 0
    with modal.Dict.ephemeral() as e:
        e["k"] = 1
        assert e["k"] == 1


def test_queue_api(mwtui_home: Path) -> None:
    q = modal.Queue.from_name("unit-queue", create_if_missing=True)
    q.put(1)
    q.put_many([2, 3])
    q.put("p", partition="side")
    assert q.len() == 3 and q.len(partition="side") == 1 and q.len(total=True) == 4
    assert list(q.iterate()) == [1, 2, 3] and q.len() == 3  # iterate takes nothing
    assert q.get() == 1 and q.get_many(5) == [2, 3]
    assert q.get(block=False) is None and q.get_many(2, block=False) == []
    started = time.monotonic()
    with pytest.raises(std_queue.Empty):
        q.get(timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2
    threading.Timer(0.2, q.put, ("late",)).start()
    assert q.get(timeout=5) == "late"
    assert asyncio.run(q.get.aio(partition="side")) == "p"
    with pytest.raises(InvalidError):
        q.len(partition="side", total=True)
    q.put_many([1, 2])
    q.clear(all=True)
    assert q.len(total=True) == 0


def test_volume_api(mwtui_home: Path, tmp_path: Path) -> None:
    vol = modal.Volume.from_name("unit-vol", create_if_missing=True)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay")
    with vol.batch_upload() as batch:
        batch.put_file(tmp_path / "a.txt", "/a.txt")
        batch.put_directory(src, "/tree")
    vol.commit()
    vol.reload()
    assert vol.local_path == mwtui_home / "volumes" / "unit-vol"
    assert [e.path for e in vol.listdir("/")] == ["a.txt", "tree"]
    assert [e.path for e in vol.listdir("/", recursive=True)] == ["a.txt", "tree", "tree/d", "tree/d/b.txt"]
    assert b"".join(vol.read_file("tree/d/b.txt")) == b"bee"
    with pytest.raises(InvalidError):
        vol.listdir("../../etc")
    vol.remove_file("/tree", recursive=True)
    assert [e.path for e in vol.listdir("/")] == ["a.txt"]
    with modal.Volume.ephemeral() as eph:
        folder = eph.local_path
        assert folder.is_dir()
    assert not folder.exists()


def test_network_file_systems_and_buckets_are_local_folders_too(mwtui_home: Path, tmp_path: Path) -> None:
    app = modal.App("mounts-unit")
    fn = app.function(
        serialized=True, name="mounts",
        network_file_systems={str(tmp_path / "nfs"): modal.NetworkFileSystem.from_name("shared")},
        volumes={str(tmp_path / "bucket"): modal.CloudBucketMount("my-bucket", read_only=True)},
    )(lambda: 1)
    mounts = {m.path: m for m in environment.mounts_of(fn.options, create=True)}
    assert mounts[str(tmp_path / "nfs")].target == str(mwtui_home / "network_file_systems" / "shared")
    assert mounts[str(tmp_path / "bucket")].target == str(mwtui_home / "cloud_buckets" / "my-bucket")
    assert any("an empty local folder stands in for the bucket" in w for w in environment.check(fn.options))
    env, problems = environment.provide(list(mounts.values()))
    assert problems == [] and (tmp_path / "nfs").resolve() == mwtui_home / "network_file_systems" / "shared"
    assert env["MWTUI_VOLUME_SHARED"] == str(mwtui_home / "network_file_systems" / "shared")


# ---------------------------------------------------------------- class parameters


def test_params_from_query_and_pool_key() -> None:
    app = modal.App("params-unit")

    class Model:
        name: str = modal.parameter()
        size: int = modal.parameter(default=3)
        loud: bool = modal.parameter(default=False)
        tag: bytes = modal.parameter(default=b"t")

        @modal.fastapi_endpoint()
        def web(self):
            return 1

    specs = app.cls()(Model).parameter_specs()
    assert specs == [
        {"name": "name", "type": "str"}, {"name": "size", "type": "int", "default": 3},
        {"name": "loud", "type": "bool", "default": False}, {"name": "tag", "type": "bytes", "default": "t"},
    ]
    values = params_codec.from_query(specs, b"size=07&name=ann&other=1&loud=yes")
    assert values == {"name": "ann", "size": 7, "loud": True, "tag": "t"}
    same = params_codec.from_query(specs, "loud=true&name=ann&size=7")
    assert params_codec.pool_key(values) == params_codec.pool_key(same)
    assert params_codec.decode(specs, values) == {"name": "ann", "size": 7, "loud": True, "tag": b"t"}
    with pytest.raises(params_codec.ParamError) as e:
        params_codec.from_query(specs, "size=1")
    assert e.value.status == 400 and "missing required class parameter 'name'" in e.value.text
    with pytest.raises(params_codec.ParamError, match="'size' must be an integer, not 'big'"):
        params_codec.from_query(specs, "name=a&size=big")
    with pytest.raises(params_codec.ParamError, match="unknown class parameter 'nope'"):
        params_codec.decode(specs, {"nope": 1})


# ---------------------------------------------------------------- app references


def test_module_form_and_include() -> None:
    ref = AppRef.for_module("api_pkg.main", root=str(FIXTURES))
    assert ref.path == str(FIXTURES / "api_pkg" / "main.py") and ref.stem == "main" and ref.cwd == str(FIXTURES)
    assert AppRef.parse(str(ref)) == ref
    assert AppRef.parse(f"-m api_pkg.main::app@{FIXTURES}").var == "app"
    with pytest.raises(ModuleNotFoundError):
        AppRef.for_module("api_pkg.nope", root=str(FIXTURES))
    m = discover(ref)
    assert m.ok, m.error
    assert sorted((e.name, e.label) for e in m.endpoints) == [
        ("included", "api-pkg-included"), ("own", "api-pkg-own"),
    ]


def test_app_variable_selects_one_of_several_apps() -> None:
    m = discover(AppRef.parse(f"{FIXTURES / 'api_two_apps.py'}::admin"))
    assert [e.name for e in m.endpoints] == ["private"] and m.app_name == "api-admin"
    m = discover(AppRef.parse(str(FIXTURES / "api_two_apps.py")))
    assert [e.name for e in m.endpoints] == ["public"]


def test_module_form_replica_serves_an_included_endpoint() -> None:
    ref = str(AppRef.for_module("api_pkg.main", root=str(FIXTURES)))
    with replica(ref, "included", {}) as r, r.client("included") as c:
        assert c.get("/").json() == "from the included app"


def test_local_entrypoint_is_registered_and_never_run() -> None:
    module_app = load_app(AppRef.parse(str(FIXTURES / "api_params.py")))[1]
    assert list(module_app.registered_entrypoints) == ["main"]
    m = discover(AppRef.parse(str(FIXTURES / "api_params.py")))
    assert m.ok and [e.name for e in m.endpoints] == ["Greeter.greet"]


# ---------------------------------------------------------------- the environment in real replicas


ENV_APP = str(FIXTURES / "api_env.py")


@pytest.fixture
def env_home(mwtui_home: Path) -> dict[str, str]:
    SecretStore().set("api-test", {"FROM_STORE": "store"})
    return {"MWTUI_HOME": str(mwtui_home), "API_TEST_LOCAL": "local"}


ALL_SET = {
    "FROM_IMAGE": "image", "APP_LEVEL": "app", "FROM_STORE": "store", "FROM_DOTENV": "dotenv",
    "FROM_LOCAL": "local", "FROM_ENV": "env", "SHARED": "env",
}


def test_environment_is_in_place_before_the_import_with_discoverys_plan(env_home: dict[str, str]) -> None:
    manifest = discover_in(ENV_APP, env_home)
    plan = plan_of(manifest, "environ")
    urls = json.dumps({"environ": "http://api-env-environ.localhost:8470"})
    env = {**env_home, runtime.POOL_PLAN_ENV: plan, runtime.WEB_URLS_ENV: urls}
    with replica(ENV_APP, "environ", env) as r, r.client("environ") as c:
        body = c.get("/").json()
    at_import = {**ALL_SET, "FROM_LOCAL": None}  # AT_IMPORT reads API_TEST_LOCAL's value as FROM_LOCAL only later
    assert body["now"] == ALL_SET
    assert {k: v for k, v in body["at_import"].items() if k != "FROM_LOCAL"} == \
        {k: v for k, v in at_import.items() if k != "FROM_LOCAL"}
    assert body["imports_block"] == "store"  # `with image.imports():` ran for real, with the secret set
    assert body["is_local"] is False
    assert body["web_url"] == "http://api-env-environ.localhost:8470"


def test_without_a_plan_the_environment_arrives_as_the_import_registers(env_home: dict[str, str]) -> None:
    with replica(ENV_APP, "environ", env_home) as r, r.client("environ") as c:
        body = c.get("/").json()
    assert body["now"] == ALL_SET
    # Before the App exists nothing is known; app-level secrets are set when it is created, the rest when
    # the pool's function is registered (after this module-level read).
    assert body["at_import"]["FROM_STORE"] is None
    assert body["web_url"] is None


def test_a_missing_secret_fails_the_replica_with_the_fix(env_home: dict[str, str]) -> None:
    msg = failed(ENV_APP, "needs_missing", env_home)
    assert msg["stage"] == "import" and msg["endpoint"] == "needs_missing"
    assert msg["message"].startswith("endpoint `needs_missing`: Secret 'api-missing' (needed by `needs_missing`) "
                                     "is not in mwtui's local secret store")
    assert msg["message"].endswith("Create it with: mwtui secret set api-missing TOKEN=...")
    # The same, found before the import when the replica has the plan.
    plan = plan_of(discover_in(ENV_APP, env_home), "needs_missing")
    early = failed(ENV_APP, "needs_missing", {**env_home, runtime.POOL_PLAN_ENV: plan})
    assert early["message"] == msg["message"]
    SecretStore().set("api-missing", {"OTHER": "x"})
    msg = failed(ENV_APP, "needs_missing", env_home)
    assert "is missing required key(s) TOKEN (it has OTHER)" in msg["message"]


def test_discovery_warns_about_what_this_machine_cannot_provide(env_home: dict[str, str]) -> None:
    manifest = discover_in(ENV_APP, env_home)
    assert any(w.startswith("Secret 'api-missing' is not in mwtui's local secret store") and
               "(needed by `needs_missing`; its replicas will not start until then)" in w for w in manifest.warnings)
    assert not any("api-test" in w for w in manifest.warnings)
    manifest = discover_in(str(FIXTURES / "api_volumes.py"), {**env_home, "API_TEST_MOUNT": "/proc/x/y"})
    text = "\n".join(manifest.warnings)
    assert "volume `api-vol2` at /proc/mwtui-no-such-place/data: cannot be provided at that path" in text
    assert "$MWTUI_VOLUME_API_VOL2" in text
    assert "add_local_python_source('api_no_such_module'): no module `api_no_such_module`" in text
    assert "add_local_python_source('api_helper')" not in text


def test_parametrized_class_replica_takes_params() -> None:
    app_file = str(FIXTURES / "api_params.py")
    params = json.dumps({"name": "ann", "times": 2, "loud": True, "tag": "x"})
    with replica(app_file, "Greeter", {}, "--params", params) as r, r.client("Greeter.greet") as c:
        assert c.get("/").json()["greeting"] == "HELLO ANNHELLO ANN"
    with replica(app_file, "Greeter", {}, "--params", '{"name": "bo"}') as r, r.client("Greeter.greet") as c:
        body = c.get("/").json()
        assert body["greeting"] == "hello bo" and body["tag"] == "t"
    msg = failed(app_file, "Greeter", {})
    assert msg["message"] == ("class `Greeter` needs a value for its parameter(s) name: each set of values is "
                              "served by replicas of its own, made when a request gives them (?name=...)")
    msg = failed(app_file, "Greeter", {}, "--params", '{"name": "x", "times": "many"}')
    assert msg["message"] == "class `Greeter`: class parameter 'times' must be an integer, not 'many'"
    plan = json.loads(plan_of(discover(AppRef.parse(app_file)), "Greeter"))
    assert plan["parameters"][0] == {"name": "name", "type": "str"}


# ---------------------------------------------------------------- served for real


@pytest.fixture(scope="module")
def volumes_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path, Path]]:
    tmp = tmp_path_factory.mktemp("volumes")
    (tmp / "mnt").mkdir()
    home = tmp / "home"
    env = {"MWTUI_HOME": str(home), "API_TEST_MOUNT": str(tmp / "mnt" / "data"),
           "API_TEST_ASSETS": str(tmp / "mnt" / "assets")}
    # Host mode: what this covers is how mount paths are linked without a container view.
    served = start_serve(FIXTURES / "api_volumes.py", "--no-reload", "--no-container", env=env)
    try:
        served.wait_running()
        yield served, tmp, home
    finally:
        stop_serve(served)


def test_volume_is_one_local_folder_reached_at_its_mount_path(volumes_served: tuple[Served, Path, Path]) -> None:
    served, tmp, home = volumes_served
    r = served.post("api-volumes-write", params={"text": "hello volume"})
    assert r.status_code == 200, r.text
    assert r.json() == {"mount_is_link": True, "other": str(home / "volumes" / "api-vol2")}
    r = served.get("api-volumes-read")  # another pool: another process
    assert r.status_code == 200, r.text
    assert r.json() == {
        "note": "hello volume", "listdir": ["note.txt"], "read_file": "hello volume", "asset": "asset text",
        "helper": "helper", "folder": str(home / "volumes" / "api-vol"),
    }
    assert (tmp / "mnt" / "data").resolve() == home / "volumes" / "api-vol"
    assert (home / "volumes" / "api-vol2" / "other.txt").read_text() == "HELLO VOLUME"
    assert any("api-vol2" in line and "cannot be provided at that path" in line for line in served.lines)


@pytest.fixture(scope="module")
def calls_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("calls")
    served = start_serve(FIXTURES / "api_calls.py", "--no-reload", env={"MWTUI_HOME": str(home)})
    try:
        served.wait_running()
        yield served
    finally:
        stop_serve(served)


def test_plain_functions_called_from_web_code(calls_served: Served) -> None:
    r = calls_served.get("api-calls-compute", params={"x": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    url = f"http://api-calls-compute.localhost:{calls_served.port}"
    first, second = body.pop("cls")
    assert first["sum"] == second["sum"] == 14
    assert first["entered_at"] == second["entered_at"]  # one instance per parameter values, entered once
    assert body == {
        "local": 16, "remote": 16, "map": [0, 1, 4, 9], "map_unordered": [0, 1, 4, 9], "starmap": [3, 8],
        # The callee runs in its own pool: its secret is never the caller's.
        "gen": [0, 1, 2, 3], "async_remote": 8, "callee_env": "callee", "caller_env": None,
        "is_local": False, "url": url,  # the gateway's label URL, as get_web_url() gives on Modal
        "refused": "A webhook function cannot be invoked for remote execution with `.remote`. Invoke this "
                   f"function via its web url '{url}' or call it locally: compute.local()",
    }
    r = calls_served.get("api-calls-compute-async", params={"x": 3})
    assert r.json() == {"remote": 9, "map": [0, 1, 4], "double": 6}


def test_spawned_call_is_found_by_id_from_another_replica(calls_served: Served) -> None:
    r = calls_served.post("api-calls-submit", params={"seconds": 1.0, "value": "later"})
    assert r.status_code == 200, r.text
    call_id = r.json()["call_id"]
    assert call_id.startswith("fc-")
    pending = calls_served.get("api-calls-result", params={"call_id": call_id})  # another pool: another process
    assert pending.status_code == 202 and pending.json() == {"pending": True}
    done = calls_served.get("api-calls-result", params={"call_id": call_id, "timeout": 20})
    assert done.status_code == 200 and done.json() == {"result": {"value": "later", "call_id": call_id}}
    failing = calls_served.post("api-calls-submit", params={"fail": True}).json()["call_id"]
    r = calls_served.get("api-calls-result", params={"call_id": failing, "timeout": 20})
    assert r.json() == {"error": "ValueError: boom from a spawned call"}


@pytest.fixture(scope="module")
def store_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("store")
    served = start_serve(FIXTURES / "api_store.py", "--no-reload", env={"MWTUI_HOME": str(home)})
    try:
        served.wait_running()
        yield served
    finally:
        stop_serve(served)


def test_dict_and_queue_are_shared_across_replicas(store_served: Served) -> None:
    r = store_served.post("api-store-put", json={"key": "k1", "value": "v1"})
    assert r.status_code == 200 and r.json() == {"len": 1, "queued": 1}
    r = store_served.get("api-store-get", params={"key": "k1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"value": "v1", "contains": True, "first": "v1", "side": ["v1-a", "v1-b"], "left": 0}


@pytest.fixture(scope="module")
def examples_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("examples")
    env = {"MWTUI_HOME": str(home), "API_EXAMPLES_PORT": str(free_port())}
    served = start_serve(FIXTURES / "api_examples.py", "--no-reload", env=env)
    try:
        served.wait_running()
        yield served
    finally:
        stop_serve(served)


def test_example_fastapi_pydantic_body(examples_served: Served) -> None:
    label = "api-examples-create-item"
    r = examples_served.post(label, params={"discount": 0.5}, json={"name": "pen", "price": 3, "tags": ["a"]})
    assert r.status_code == 200 and r.json() == {"name": "pen", "total": 1.5, "tags": ["a"]}
    bad = examples_served.post(label, json={"name": "pen"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "price"]
    assert examples_served.get(label, "/docs").status_code == 200


def test_example_flask(examples_served: Served) -> None:
    assert examples_served.get("api-examples-flask-app").text == "flask home"
    r = examples_served.post("api-examples-flask-app", "/echo", json={"a": 1}, headers={"x-test": "t"})
    assert r.json() == {"got": {"a": 1}, "agent": "t"}


def test_example_server_sent_events(examples_served: Served) -> None:
    with examples_served.client(f"api-examples-events.localhost:{examples_served.port}") as c, \
            c.stream("GET", "/", params={"n": 3}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events == ["data: tick 0", "data: tick 1", "data: tick 2"]


def test_example_websocket_echo(examples_served: Served) -> None:
    from websockets.sync.client import connect

    # The URL gives the Host header; the socket goes to the gateway on loopback.
    sock = socket.create_connection(("127.0.0.1", examples_served.port), timeout=10)
    with connect(f"ws://api-examples-ws-app.localhost:{examples_served.port}/ws", sock=sock, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo: hi"
        ws.send("bye")


def test_example_web_server_http_server(examples_served: Served) -> None:
    r = examples_served.get("api-examples-files")
    assert r.status_code == 200 and "a.txt" in r.text
    assert examples_served.get("api-examples-files", "/a.txt").text == "asset text\n"


def test_example_concurrent_class_takes_inputs_together(examples_served: Served) -> None:
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(examples_served.get("api-examples-together-meet"))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in results) == [200, 200], [r.text for r in results]
    assert sorted(r.json()["party"] for r in results) == [0, 1]
    status = {e["name"]: e for e in examples_served.status()}
    assert status["Together.meet"]["state"] == "running"


def test_example_parametrized_class_has_a_pool_per_set_of_values(examples_served: Served) -> None:
    big = examples_served.get("api-examples-model-predict", "/?name=big&size=3&x=2")
    assert big.status_code == 200, big.text
    assert big.json()["model"] == "big" and big.json()["y"] == 18  # the endpoint's own x and the class's values
    small = examples_served.get("api-examples-model-predict", "/?name=small&x=2").json()
    assert small["y"] == 2 and small["pid"] != big.json()["pid"]
    again = examples_served.get("api-examples-model-predict", "/?size=3&name=big&x=5").json()
    assert again["y"] == 45 and again["pid"] == big.json()["pid"]
    status = {e["name"]: e for e in examples_served.status()}
    assert status["Model.predict?name=big&size=3"]["params"] == {"name": "big", "size": 3}
    assert examples_served.get("api-examples-model-predict", "/?x=2").status_code == 400
