"""A replica's container view (engine/worker/container.py): the pure plan, then served for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mwtui.engine.worker import container
from mwtui.engine.worker.container import Op, Want, plan, wants_from_plan

from .conftest import Served, as_nobody_or_skip, start_serve, stop_serve

FIXTURES = Path(__file__).parent / "fixtures"
LABEL = "ctr-web"


class FakeHost:
    """A host file system as {path: "dir" | "file" | "link:<text>"}."""

    def __init__(self, tree: dict[str, str]) -> None:
        self.tree = {"/": "dir", **tree}

    def kind(self, path: str) -> str | None:
        k = self.tree.get(path)
        return None if k is None else "link" if k.startswith("link:") else k

    def entries(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return [p[len(prefix):] for p in self.tree if p.startswith(prefix) and "/" not in p[len(prefix):]]

    def readlink(self, path: str) -> str:
        return self.tree[path][len("link:"):]


HOST = FakeHost({
    "/bin": "link:usr/bin", "/usr": "dir", "/usr/bin": "dir", "/tmp": "dir", "/etc": "dir",
    "/etc/hosts": "file", "/root": "dir", "/root/app": "dir", "/root/.bashrc": "file",
    "/src": "dir", "/src/site": "dir", "/src/helper.py": "file", "/home/v": "dir", "/home": "dir",
})


def test_the_root_is_the_hosts_top_level_bound_with_its_symlinks_copied() -> None:
    ops, problems = plan([Want("/assets", "/src/site", False, True)], HOST)
    assert problems == []
    assert Op("symlink", "/bin", "usr/bin") in ops
    assert [Op("mkdir", "/usr"), Op("bind", "/usr", "/usr")] == ops[ops.index(Op("mkdir", "/usr")):][:2]
    assert Op("touch", "/etc") not in ops and Op("bind", "/etc", "/etc") in ops
    # The new mount point is made in the view's own root (a tmpfs), never on the host.
    assert ops[-2:] == [Op("mkdir", "/assets"), Op("bind", "/assets", "/src/site", readonly=True)]
    assert not any(op.kind == "tmpfs" for op in ops)


def test_a_path_in_an_existing_folder_shadows_that_folder_with_its_host_entries() -> None:
    ops, problems = plan([Want("/root/helper.py", "/src/helper.py", False, False),
                          Want("/root/app", "/src/site", False, True)], HOST)
    assert problems == []
    shadow = ops.index(Op("tmpfs", "/root"))
    assert {Op("bind", "/root/.bashrc", "/root/.bashrc"), Op("bind", "/root/app", "/root/app")} <= set(ops[shadow:])
    tail = ops[-3:]
    # /root/app exists on the host: bound over in the view, after the shadow that would otherwise hide it.
    assert ops.index(Op("bind", "/root/app", "/src/site", readonly=True)) > shadow
    assert Op("touch", "/root/helper.py") in tail and Op("bind", "/root/helper.py", "/src/helper.py", True) in tail


def test_volumes_are_writable_and_deep_paths_get_their_missing_folders() -> None:
    ops, problems = plan([Want("/mnt/vols/data", "/home/v", True, True)], HOST)
    assert problems == []
    assert ops[-4:] == [Op("mkdir", "/mnt"), Op("mkdir", "/mnt/vols"), Op("mkdir", "/mnt/vols/data"),
                        Op("bind", "/mnt/vols/data", "/home/v", readonly=False)]


def test_what_cannot_be_given_is_said_and_left_out() -> None:
    wants = [
        Want("/proc/x/data", "/home/v", True, True),  # the kernel's tree
        Want("/bin/tool", "/src/helper.py", False, False),  # under a host symlink
        Want("/etc/hosts", "/src/site", False, True),  # a file there, not a folder
        Want("/assets", "/src/nope", False, True),  # no source
        Want("/", "/src/site", False, True),  # the root
    ]
    ops, problems = plan(wants, HOST)
    text = "\n".join(problems)
    for bit in ("/proc/x/data: paths under", "/bin is a symlink", "/etc/hosts: the machine has a file",
                "/src/nope does not exist", "/: the root of the file system cannot be replaced"):
        assert bit in text
    assert [op for op in ops if op.kind == "bind" and op.path != op.source] == []


def test_a_path_inside_another_is_placed_after_it() -> None:
    """Inside an image folder or a volume: the outer one first, then a mount point made in the view (in a
    volume straight through its bind: a shadow would hide the files the app adds at its top level)."""
    host = FakeHost({**HOST.tree, "/src/site/index.html": "file", "/src/site/img": "dir"})
    ops, problems = plan([Want("/data", "/home/v", True, True), Want("/data/models", "/src/site", False, True),
                          Want("/web", "/src/site", False, True), Want("/web/img", "/home/v", True, True)], host)
    assert problems == []
    at = ops.index
    # /web/img exists in /src/site: the volume is bound straight over it, after /web itself.
    assert at(Op("bind", "/web/img", "/home/v")) > at(Op("bind", "/web", "/src/site", readonly=True))
    # /data/models does not exist in the volume: made in it, through its bind; /data is not shadowed.
    assert at(Op("bind", "/data", "/home/v")) < at(Op("mkdir", "/data/models"))
    assert Op("tmpfs", "/data") not in ops
    assert ops[at(Op("mkdir", "/data/models")) + 1] == Op("bind", "/data/models", "/src/site", readonly=True)


def test_a_shadow_inside_an_image_folder_keeps_it_read_only() -> None:
    host = FakeHost({**HOST.tree, "/src/site/index.html": "file"})
    ops, _ = plan([Want("/web", "/src/site", False, True), Want("/web/cache", "/home/v", True, True)], host)
    shadow = ops.index(Op("tmpfs", "/web"))
    assert Op("bind", "/web/index.html", "/src/site/index.html", readonly=True) in ops[shadow:]
    assert ops[-2:] == [Op("mkdir", "/web/cache"), Op("bind", "/web/cache", "/home/v")]


def test_a_folder_that_would_hide_what_mwtui_runs_from_is_merged() -> None:
    """`add_local_dir(".", "/root")` when this Python lives in /root/.venv: /root keeps the machine's
    entries, the app's names are bound over them, and .venv stays the machine's."""
    host = FakeHost({**HOST.tree, "/root/.venv": "dir", "/root/.venv/bin": "dir", "/proj": "dir",
                     "/proj/app.py": "file", "/proj/.bashrc": "file", "/proj/.venv": "dir", "/proj/data": "dir"})
    ops, problems = plan([Want("/root", "/proj", False, True), Want("/root/data/v", "/home/v", True, True)],
                         host, keep=["/root/.venv/bin"])
    assert problems == ["/root: /root/.venv stays this machine's own (mwtui runs from it)"]
    shadow = ops.index(Op("tmpfs", "/root"))
    assert Op("bind", "/root/.venv", "/root/.venv") in ops[shadow:]  # the machine's
    assert Op("bind", "/root/app", "/root/app") in ops[shadow:]  # the machine's, the app has none
    assert Op("bind", "/root/app.py", "/proj/app.py", readonly=True) in ops[shadow:]
    assert Op("bind", "/root/.bashrc", "/proj/.bashrc", readonly=True) in ops[shadow:]  # the app's wins
    assert Op("bind", "/root/.venv", "/proj/.venv", readonly=True) not in ops
    assert Op("bind", "/root", "/proj", readonly=True) not in ops
    # A volume inside the merged folder goes into the app's data folder, made in its shadow.
    assert ops[-2:] == [Op("mkdir", "/root/data/v"), Op("bind", "/root/data/v", "/home/v")]


def test_a_folder_at_its_own_path_is_left_as_it_is() -> None:
    ops, problems = plan([Want("/root/app", "/root/app", False, True)], HOST)
    assert problems == [] and Op("bind", "/root/app", "/root/app", readonly=True) not in ops


def test_the_wants_come_from_the_pool_plan() -> None:
    pool_plan = {"mounts": [
        {"path": "/data/", "target": "/h/volumes/v", "what": "volume `v`", "env_var": "MWTUI_VOLUME_V"},
        {"path": "/assets", "target": "/app/site", "what": "add_local_dir('site')", "env_var": None},
        {"path": "./conf", "target": "/app/conf", "what": "copy_local_dir('conf')"},
    ]}
    assert wants_from_plan(pool_plan, lambda p: p == "/app/site") == [
        Want("/data", "/h/volumes/v", True, True, "volume `v`"),
        Want("/assets", "/app/site", False, True, "add_local_dir('site')"),
        Want("/root/conf", "/app/conf", False, False, "copy_local_dir('conf')"),
    ]


# ---------------------------------------------------------------- served for real


def _container_possible() -> str | None:
    """Why the view cannot be tested here, or None."""
    if not sys.platform.startswith("linux"):
        return "the container view is Linux-only"
    if os.geteuid() == 0:
        return None
    unshare = shutil.which("unshare")
    ok = unshare and subprocess.run([unshare, "-Urm", "true"], capture_output=True).returncode == 0
    return None if ok else "not root, and user namespaces are not available"


@pytest.fixture
def no_host_paths() -> None:
    reason = _container_possible()
    if reason:
        pytest.skip(reason)
    for p in ("/assets", "/data"):
        if os.path.lexists(p):
            pytest.skip(f"{p} exists on this machine: cannot show that mwtui does not create it")


def _roots() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("mwtui-root-")}


def _get(served: Served, **params: str) -> dict:
    r = served.get(LABEL, params=params)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("spawn", ["zygote", "cold"])
def test_image_files_and_volumes_at_their_container_paths(no_host_paths: None, tmp_path: Path, spawn: str) -> None:
    home = tmp_path / "home"
    roots_before = _roots()
    assets = FIXTURES / "container_assets" / "hello.txt"
    extra = ["--cold-start"] if spawn == "cold" else []
    served = start_serve(FIXTURES / "container_app.py", "--no-reload", *extra, env={"MWTUI_HOME": str(home)})
    try:
        served.wait_status("2 replicas ready", lambda rows: rows["web"]["replicas"]["ready"] == 2, timeout=60)
        assert _get(served, op="assets")["text"] == "hello from assets\n"
        assert _get(served, op="write", value="bytes of x")["ok"]
        # Two held requests at once: one per replica; both see the other's write at once.
        with ThreadPoolExecutor(2) as pool:
            reads = list(pool.map(lambda _: _get(served, op="read", wait="1.0"), range(2)))
        assert len({r["pid"] for r in reads}) == 2, reads
        assert all(r["text"] == "bytes of x" for r in reads), reads
        denied = _get(served, op="write_assets")
        assert not denied["ok"] and "Read-only file system" in denied["error"], denied
        # A volume inside the image folder: written through, the image's files still beside it.
        assert _get(served, op="cache", value="cached")["listing"] == ["cache", "hello.txt"]
        assert _get(served, op="pkg")["text"] == "hello from a python source\n"
        assert not any("host mode" in line or "container view:" in line for line in served.lines), served.lines
    finally:
        assert stop_serve(served) == 0
    assert (home / "volumes" / "v" / "x").read_bytes() == b"bytes of x"
    assert (home / "volumes" / "cache" / "y").read_bytes() == b"cached"
    assert assets.read_text() == "hello from assets\n"
    assert sorted(p.name for p in assets.parent.iterdir()) == ["hello.txt"]  # no mount point left in it
    assert not os.path.lexists("/assets") and not os.path.lexists("/data")
    assert _roots() <= roots_before  # each replica's temporary root is gone again


def test_no_container_is_host_mode(no_host_paths: None, tmp_path: Path) -> None:
    served = start_serve(FIXTURES / "container_app.py", "--no-reload", "--no-container",
                         env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_running()
        seen = _get(served, op="assets")
        assert not seen["ok"] and "FileNotFoundError" in seen["error"], seen
        served.wait_for_line(r"web\.(\d+|snapshot) .*mwtui: host mode \(--no-container\)")
    finally:
        assert stop_serve(served) == 0
    assert not os.path.lexists("/assets") and not os.path.lexists("/data")


def test_when_the_kernel_refuses_the_replica_says_host_mode_and_how_to_enable_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(wants: list[Want]) -> list[str]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(container, "enter", refuse)
    env = {container.POOL_PLAN_ENV: json.dumps({"mounts": [{"path": "/assets", "target": "/nowhere"}]})}
    assert container.setup_from_env(env) == "host"
    err = capsys.readouterr().err
    assert "host mode: cannot give this replica its own container view (Operation not permitted)" in err
    assert "run mwtui as root, or allow unprivileged user namespaces" in err
    assert container.setup_from_env({**env, container.CONTAINER_ENV: "0"}) == "host"
    assert "host mode (--no-container)" in capsys.readouterr().err
    assert container.setup_from_env({}) == ""  # nothing to mount: nothing said


UNPRIVILEGED_PROBE = """
import json, os, sys
from mwtui.engine.worker import container
mode = container.setup_from_env()
out = {"uid": os.getuid(), "mode": mode, "cwd": os.getcwd()}
try:
    out["asset"] = open("/assets/a.txt").read()
except OSError as e:
    out["asset_error"] = str(e)
try:
    open("/assets/new.txt", "w")
except OSError as e:
    out["write_error"] = e.strerror
with open("/data/x", "w") as f:
    f.write("from nobody")
print(json.dumps(out))
"""


def test_the_container_view_as_an_unprivileged_user(request: pytest.FixtureRequest) -> None:
    """mwtui run by a user who is not root: the view comes from a user namespace of its own (the uid
    mapped to itself, so files keep their owner); nothing appears on the host outside the folders."""
    if os.path.exists("/assets") or os.path.exists("/data"):
        pytest.skip("/assets or /data exists on this machine: the test could not tell ours from it")
    nobody = as_nobody_or_skip("m", "host mode")
    # pytest's own temp folders are private to root: nobody could not reach a mount's source there.
    tmp_path = Path(tempfile.mkdtemp(prefix="mwtui-test-nobody-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    tmp_path.chmod(0o755)
    site, volume = tmp_path / "site", tmp_path / "volume"
    site.mkdir(mode=0o755)
    (site / "a.txt").write_text("asset")
    volume.mkdir()
    shutil.chown(volume, 65534, 65534)
    plan_json = json.dumps({"version": 1, "env": [], "mounts": [
        {"path": "/assets", "target": str(site), "what": "add_local_dir('site')", "env_var": None, "note": ""},
        {"path": "/data", "target": str(volume), "what": "volume `v`", "env_var": "MWTUI_VOLUME_V", "note": ""},
    ]})
    done = subprocess.run([*nobody, sys.executable, "-c", UNPRIVILEGED_PROBE], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=60,
                          env={**os.environ, "MWTUI_POOL_PLAN": plan_json, "MWTUI_CONTAINER": "1"})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["uid"] == 65534 and got["mode"] == "container", (got, done.stderr)
    assert got["asset"] == "asset" and got["write_error"] == "Read-only file system", got
    assert got["cwd"] == str(tmp_path)
    assert (volume / "x").read_text() == "from nobody" and (volume / "x").stat().st_uid == 65534
    assert sorted(p.name for p in site.iterdir()) == ["a.txt"]
    assert not os.path.exists("/assets") and not os.path.exists("/data")


def test_a_user_namespace_that_cannot_map_the_user_is_refused_before_the_replica_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A process cannot leave a user namespace: a child tries it first, and the replica stays as it was
    (host mode, said with the reason) instead of ending up in one where it owns nothing."""
    if not sys.platform.startswith("linux"):
        pytest.skip("user namespaces are Linux's")

    def refuse(uid: int, gid: int) -> None:
        raise OSError(1, "the user namespace cannot map this user (uid_map: Operation not permitted)")

    monkeypatch.setattr(container, "_map_ids", refuse)
    before = os.stat("/proc/self/ns/user").st_ino
    with pytest.raises(OSError, match="cannot map this user"):
        container.own_user_namespace(container.Libc(), container.CLONE_NEWNS)
    assert os.stat("/proc/self/ns/user").st_ino == before


MERGED_APP = """
import os
import modal

image = modal.Image.debian_slim().add_local_dir({site!r}, remote_path={target!r})
app = modal.App("merged", image=image)


@app.function(min_containers=2)
@modal.fastapi_endpoint()
def web():
    with open(os.path.join({target!r}, "merged-hello.txt")) as f:
        return {{"text": f.read(), "venv": os.path.isdir(os.path.join({target!r}, {venv!r}, "bin"))}}
"""


def test_a_folder_over_the_venv_is_merged_and_said_once(no_host_paths: None, tmp_path: Path) -> None:
    """An image folder at the folder holding this Python's venv: the replicas still run (the venv stays
    the machine's), see the app's file there, and the log says so once, not once per replica."""
    target, venv = os.path.split(os.path.realpath(sys.prefix))
    site = tmp_path / "site"
    (site / venv).mkdir(parents=True)
    (site / "merged-hello.txt").write_text("merged")
    app = tmp_path / "merged.py"
    app.write_text(MERGED_APP.format(site=str(site), target=target, venv=venv))
    served = start_serve(app, "--no-reload", env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_status("2 replicas ready", lambda rows: rows["web"]["replicas"]["ready"] == 2, timeout=60)
        assert served.get("merged-web").json() == {"text": "merged", "venv": True}
        said = [line for line in served.lines if f"{target}/{venv} stays this machine's own" in line]
        assert len(said) == 1, served.lines
    finally:
        assert stop_serve(served) == 0
    assert not os.path.exists(os.path.join(target, "merged-hello.txt"))
