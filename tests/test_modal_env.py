"""Modal's container variables (engine/modal_env.py) in every replica, and nowhere else."""

from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from mwtui.engine import modal_env

from .conftest import Served, start_serve, stop_serve
from .eventually import eventually

FIXTURES = Path(__file__).parent / "fixtures"
LABEL = "envs-web"
TASK_ID = re.compile(r"ta-[0-9A-HJKMNP-TV-Z]{26}")
IMAGE_ID = re.compile(r"im-[0-9A-Za-z]{22}")


def test_task_ids_are_fresh_ulids_and_image_ids_follow_the_definition() -> None:
    ids = {modal_env.new_task_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(TASK_ID.fullmatch(i) for i in ids)
    assert sorted(ids)[0][:10] == sorted(ids)[-1][:10]  # ULIDs: the time comes first
    base = [("debian_slim", (), {"python_version": "3.12"})]
    same = modal_env.image_id([("debian_slim", (), {"python_version": "3.12"})])
    assert IMAGE_ID.fullmatch(same) and modal_env.image_id(base) == same
    assert modal_env.image_id([*base, ("pip_install", ("httpx",), {})]) != same
    # Functions are named, not addressed: the same in discovery and in every replica.
    assert modal_env.image_id([("run_function", (test_task_ids_are_fresh_ulids_and_image_ids_follow_the_definition,), {})]) \
        == modal_env.image_id([("run_function", (test_task_ids_are_fresh_ulids_and_image_ids_follow_the_definition,), {})])


def test_the_modal_environment_comes_from_the_users_shell_or_is_main() -> None:
    assert modal_env.replica_env("", {})["MODAL_ENVIRONMENT"] == "main"
    assert modal_env.replica_env("", {"MODAL_ENVIRONMENT": "dev"})["MODAL_ENVIRONMENT"] == "dev"
    assert modal_env.replica_env('{"image_id": "im-x"}', {})["MODAL_IMAGE_ID"] == "im-x"


def _get(served: Served, wait: float = 0.0) -> dict:
    r = served.get(LABEL, params={"wait": str(wait)})
    assert r.status_code == 200, r.text
    return r.json()


def _both(served: Served) -> list[dict]:
    """One answer from each replica: two held requests at once."""
    with ThreadPoolExecutor(2) as pool:
        seen = list(pool.map(lambda _: _get(served, wait=1.0), range(2)))
    assert len({s["pid"] for s in seen}) == 2, seen
    return seen


def _replaced(served: Served, dead: int, timeout: float = 60.0) -> list[dict]:
    """One answer from each replica once `dead` has been replaced."""

    def answers() -> list[dict] | None:
        seen = _both(served)
        return seen if dead not in {s["pid"] for s in seen} else None

    # An AssertionError from _both means "not yet": still one replica, or a request reached the dead one.
    # (0.2 s between tries: a failed try can be quick, and each one sends two requests.)
    return eventually(answers, timeout, lambda: f"replica {dead} replaced: {served.status()}",
                      retry_on=(AssertionError,), interval=0.2)


def _container_vars(pid: int) -> set[str]:
    return set(psutil.Process(pid).environ()) & modal_env.RESERVED - {"MODAL_ENVIRONMENT"}


@pytest.mark.parametrize("spawn", ["zygote", "cold"])
def test_every_replica_has_modal_s_container_variables(tmp_path: Path, spawn: str) -> None:
    extra = ["--cold-start"] if spawn == "cold" else []
    env = {"MWTUI_HOME": str(tmp_path / "home"), "MODAL_ENVIRONMENT": "staging"}
    served = start_serve(FIXTURES / "modal_env_app.py", "--no-reload", "--no-container", *extra, env=env)
    try:
        served.wait_status("2 replicas ready", lambda rows: rows["web"]["replicas"]["ready"] == 2, timeout=60)
        seen = _both(served)
        for s in seen:
            now, at_import = s["now"], s["at_import"]
            if spawn == "cold":
                assert at_import == now  # in place before the app file's module-level code ran
            else:
                # Imported once, in its generation's snapshot: a container of its own (as Modal's snapshot
                # is taken in one), so the same variables with its own task id.
                assert TASK_ID.fullmatch(at_import["MODAL_TASK_ID"]) and at_import["MODAL_TASK_ID"] != now["MODAL_TASK_ID"]
                assert {**at_import, "MODAL_TASK_ID": ""} == {**now, "MODAL_TASK_ID": ""}
            assert TASK_ID.fullmatch(now["MODAL_TASK_ID"]), now
            assert IMAGE_ID.fullmatch(now["MODAL_IMAGE_ID"]) and now["MODAL_IMAGE_ID"] == s["image_object_id"], s
            # Reserved: the image's ENV, the secret and env= did not override them; other keys still come.
            assert (now["MODAL_IS_REMOTE"], now["MODAL_REGION"]) == ("1", "local") and s["mine"] == "kept"
            assert (now["MODAL_ENVIRONMENT"], now["MODAL_CLOUD_PROVIDER"]) == ("staging", "CLOUD_PROVIDER_LOCAL")
            assert now["MODAL_IDENTITY_TOKEN"] is None  # no issuer here to sign one
            assert s["is_local"] is False
        assert seen[0]["now"]["MODAL_TASK_ID"] != seen[1]["now"]["MODAL_TASK_ID"]
        assert seen[0]["now"]["MODAL_IMAGE_ID"] == seen[1]["now"]["MODAL_IMAGE_ID"]

        # mwtui's own processes (engine, gateway, zygote) have none of them; a snapshot has its own.
        replicas = {s["pid"] for s in seen}
        others = {p for p in served.tree_pids() - replicas if "worker.snapshot" not in " ".join(psutil.Process(p).cmdline())}
        assert others and not [p for p in others if _container_vars(p)], {p: _container_vars(p) for p in others}

        # A replica that dies is replaced by a new container: a new task id.
        os.kill(seen[0]["pid"], signal.SIGKILL)
        again = _replaced(served, seen[0]["pid"])
        old = {s["now"]["MODAL_TASK_ID"] for s in seen}
        assert len({s["now"]["MODAL_TASK_ID"] for s in again} - old) == 1, (seen, again)
    finally:
        assert stop_serve(served) == 0
