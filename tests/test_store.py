"""mwtui's local store: named secrets, volume folders and mount links, and the shared SQLite file behind
modal.Dict, modal.Queue and spawned calls, hammered from several processes at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from mwtui.engine.store import calls, db
from mwtui.engine.store.kv import DictStore, QueueStore, drop
from mwtui.engine.store.secrets import SecretStore, SecretStoreError
from mwtui.engine.store.volumes import check_link, env_var, folder_for, link


@pytest.fixture(autouse=True)
def home(mwtui_home: Path) -> Path:
    return mwtui_home


# --- secrets -------------------------------------------------------------------------------------


def test_secret_store_is_private_and_merges(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = home / "fresh"  # a home mwtui creates itself is 0700
    monkeypatch.setenv("MWTUI_HOME", str(home))
    store = SecretStore()
    assert store.get("api") is None
    assert store.set("api", {"A": "1", "B": "2"}) == {"A": "1", "B": "2"}
    assert store.set("api", {"B": "3", "C": "x=y"}) == {"A": "1", "B": "3", "C": "x=y"}
    assert store.set("api", {"Z": "z"}, replace=True) == {"Z": "z"}
    store.set("other", {"K": ""})
    assert store.list() == {"api": ["Z"], "other": ["K"]}
    path = home / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert store.delete("api") and not store.delete("api")
    assert store.list() == {"other": ["K"]}


def test_secret_store_refuses_bad_names_and_files(home: Path) -> None:
    store = SecretStore()
    with pytest.raises(SecretStoreError, match="invalid secret name"):
        store.set("has space", {"A": "1"})
    with pytest.raises(SecretStoreError, match="invalid key"):
        store.set("ok", {"A=B": "1"})
    (home / "secrets.json").write_text("[1, 2]")
    with pytest.raises(SecretStoreError, match="not a valid mwtui secrets file"):
        store.list()


def _set_many(home: str, i: int) -> None:
    os.environ["MWTUI_HOME"] = home
    for j in range(20):
        SecretStore().set("shared", {f"K{i}_{j}": str(j)})


def test_concurrent_secret_sets_lose_nothing(home: Path) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_set_many, args=(str(home), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(SecretStore().get("shared") or {}) == 80


# --- volumes -------------------------------------------------------------------------------------


def test_volume_folder_and_env_var(home: Path) -> None:
    folder = folder_for("my-vol")
    assert folder == home / "volumes" / "my-vol" and folder.is_dir()
    assert folder_for("x", "nfs") == home / "network_file_systems" / "x"
    assert env_var("my-vol.v2") == "MWTUI_VOLUME_MY_VOL_V2"
    assert not folder_for("later", create=False).exists()


def test_links_only_where_nothing_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    mount = tmp_path / "mnt" / "data"
    assert not check_link(str(mount), target).ok  # its folder does not exist: never created
    (tmp_path / "mnt").mkdir()
    assert check_link(str(mount), target).ok
    assert link(str(mount), target).ok and mount.is_symlink()
    assert link(str(mount), target).ok  # again: already ours
    taken = tmp_path / "taken"
    taken.mkdir()
    check = link(str(taken), target)
    assert not check.ok and "already exists" in check.reason and not taken.is_symlink()
    assert not check_link("/proc/mwtui-nope/data", target).ok


def test_links_elsewhere_only_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    outside = Path(tempfile.mkdtemp(dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None))
    try:
        mount = outside / "data"
        if not str(outside).startswith(tempfile.gettempdir()):
            check = check_link(str(mount), target)  # like /data: not made by default
            assert not check.ok and "MWTUI_MOUNT_LINKS=any" in check.reason
            monkeypatch.setenv("MWTUI_MOUNT_LINKS", "any")
        assert link(str(mount), target).ok and mount.resolve() == target
        # A dangling link of a home that is gone is replaced; anything else is left alone.
        gone = tmp_path / "mwtui-home-gone" / "volumes" / "v"
        stale = tmp_path / "stale"
        stale.symlink_to(gone)
        assert link(str(stale), target).ok and stale.resolve() == target
        foreign = tmp_path / "foreign"
        foreign.symlink_to(tmp_path / "elsewhere" / "volumes" / "v")
        assert not link(str(foreign), target).ok
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# --- dict and queue, across processes ------------------------------------------------------------


def test_dict_store_semantics() -> None:
    d = DictStore("unit")
    assert d.get(b"k") is None
    assert d.put(b"k", b"1") and d.put(b"j", b"2")
    assert not d.put(b"k", b"9", skip_if_exists=True)
    d.update([(b"k", b"3"), (b"z", b"4")])
    assert d.items() == [(b"k", b"3"), (b"j", b"2"), (b"z", b"4")]  # insertion order, updates in place
    assert d.pop(b"j") == b"2" and d.pop(b"j") is None
    assert d.len() == 2 and d.contains(b"z")
    drop("dict", "unit")
    assert d.len() == 0


def _producer(home: str, name: str, i: int, n: int) -> None:
    os.environ["MWTUI_HOME"] = home
    q = QueueStore(name)
    for j in range(n):
        q.put_many([f"{i}:{j}".encode()])


def _consumer(home: str, name: str, out: mp.Queue, produced: Any) -> None:
    os.environ["MWTUI_HOME"] = home
    q = QueueStore(name)
    got: list[bytes] = []
    while True:
        done = produced.is_set()  # read before the get: an empty queue after that means the end
        batch = q.get_many(7)
        got += batch
        if not batch:
            if done:
                break
            time.sleep(0.002)
    out.put(got)


def test_queue_items_go_to_exactly_one_consumer(home: Path) -> None:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    produced = ctx.Event()
    producers = [ctx.Process(target=_producer, args=(str(home), "work", i, 100)) for i in range(3)]
    consumers = [ctx.Process(target=_consumer, args=(str(home), "work", out, produced)) for _ in range(3)]
    for p in producers + consumers:
        p.start()
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    produced.set()
    results = [out.get(timeout=60) for _ in consumers]
    for p in consumers:
        p.join(60)
        assert p.exitcode == 0
    got = [x for r in results for x in r]
    assert len(got) == 300 and len(set(got)) == 300
    for r in results:  # each producer's items arrive in its order
        for i in range(3):
            mine = [int(x.split(b":")[1]) for x in r if x.startswith(f"{i}:".encode())]
            assert mine == sorted(mine)


def _claim(home: str, i: int, out: mp.Queue) -> None:
    os.environ["MWTUI_HOME"] = home
    out.put(DictStore("claims").put(b"leader", str(i).encode(), skip_if_exists=True))


def test_skip_if_exists_has_one_winner(home: Path) -> None:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(home), i, out)) for i in range(6)]
    for p in procs:
        p.start()
    wins = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert wins.count(True) == 1


def test_queue_partitions_len_and_iterate_order() -> None:
    q = QueueStore("parts")
    q.put_many([b"a", b"b"])
    q.put_many([b"x"], partition="p")
    assert q.len() == 2 and q.len("p") == 1 and q.len(None) == 3
    assert [v for _, v in q.after(0)] == [b"a", b"b"]  # iterate leaves them in place
    assert q.get_many(5, "p") == [b"x"] and q.len(None) == 2
    q.clear(None)
    assert q.len(None) == 0


def test_store_file_is_private_and_in_wal_mode(home: Path) -> None:
    DictStore("x").put(b"k", b"v")
    path = home / db.DB_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert db.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- calls ---------------------------------------------------------------------------------------


def test_call_records_and_lost_calls() -> None:
    calls.create("fc-1", "f")
    assert calls.get("fc-1").state == calls.PENDING  # type: ignore[union-attr]
    calls.finish("fc-1", calls.DONE, b"result")
    record = calls.get("fc-1")
    assert record is not None and record.state == calls.DONE and record.payload == b"result"
    calls.create("fc-2", "f")
    calls.cancel("fc-2")
    calls.finish("fc-2", calls.DONE, b"late")  # a cancelled call keeps its state
    assert calls.get("fc-2").state == calls.CANCELLED  # type: ignore[union-attr]
    calls.create("fc-3", "f")
    calls.mark_lost()
    assert calls.get("fc-3").state == calls.LOST  # type: ignore[union-attr]
    with db.transaction() as c:  # a call whose process is gone reads as lost
        c.execute("INSERT INTO calls (id, function, state, pid, created) VALUES ('fc-4', 'f', 'pending', ?, 0)",
                  (2**22 + 12345,))
    assert calls.get("fc-4").state == calls.LOST  # type: ignore[union-attr]
    assert calls.get("fc-none") is None
