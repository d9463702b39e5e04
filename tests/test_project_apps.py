"""Several app files served together through one gateway (issue 18, item 4): a web endpoint of one
app calls a function and a class of another by `from_name`, each in its own process with its own
secret; unknown apps and names raise Modal's NotFoundError; a save reloads only its own app; two apps
claiming one label are told apart; a bare `mwtui serve` serves what pyproject.toml lists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Served, start_serve, stop_serve
from .eventually import eventually

pytestmark = pytest.mark.timeout(120)

SHOP = '''
import os
import modal

app = modal.App("shop")


@app.function()
@modal.fastapi_endpoint()
def front(what: str = "work", x: int = 1):
    if what == "work":
        return {"pid": os.getpid(), "secret": os.environ.get("JOBS_SECRET"),
                "callee": modal.Function.from_name("jobs", "work").remote(x)}
    if what == "model":
        model = modal.Cls.from_name("jobs", "Model")(scale=3)
        return [model.predict.remote(x), model.predict.remote(x + 1)]
    name = {"no-app": ("nowhere", "work"), "no-name": ("jobs", "missing")}[what]
    try:
        modal.Function.from_name(*name).remote()
    except modal.exception.NotFoundError as e:
        return {"type": type(e).__name__, "message": str(e)}
'''

JOBS = '''
import os
import modal

app = modal.App("jobs")
VERSION = {version}


@app.function(secrets=[modal.Secret.from_dict({{"JOBS_SECRET": "only-in-jobs"}})])
def work(x):
    return {{"pid": os.getpid(), "secret": os.environ.get("JOBS_SECRET"), "x": x, "version": VERSION}}


@app.cls()
class Model:
    scale: int = modal.parameter(default=1)

    @modal.enter()
    def load(self):
        self.loads = getattr(self, "loads", 0) + 1

    @modal.method()
    def predict(self, x):
        return {{"y": x * self.scale, "loads": self.loads, "pid": os.getpid()}}
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    folder = tmp_path_factory.mktemp("project")
    (folder / "shop.py").write_text(SHOP)
    (folder / "jobs.py").write_text(JOBS.format(version=1))
    (folder / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.mwtui]\napps = ["shop.py", "jobs.py"]\n')
    served = start_serve(None, cwd=folder, env={"MWTUI_HOME": str(folder / "home")})
    try:
        served.wait_status("the web endpoint running", lambda rows: rows.get("shop:front", {}).get("state") == "running")
        yield served, folder
    finally:
        stop_serve(served)


def front(served: Served, **params: object) -> object:
    r = served.get("shop-front", "/", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_pyproject_apps_are_served_together_grouped_by_app(project: tuple[Served, Path]) -> None:
    served, _ = project
    assert any("serving shop, jobs (shop.py, jobs.py)" in line for line in served.lines)
    rows = served.by_name()
    assert {name: row["app"] for name, row in rows.items()} == {
        "shop:front": "shop", "jobs:work": "jobs", "jobs:Model": "jobs", "jobs:Model?scale=1": "jobs"}
    assert rows["jobs:work"]["kind"] == "function" and rows["jobs:Model"]["kind"] == "cls"


def test_from_name_calls_another_apps_function_in_its_own_process(project: tuple[Served, Path]) -> None:
    served, _ = project
    out = front(served, what="work", x=7)
    assert out["secret"] is None and out["callee"]["secret"] == "only-in-jobs"  # its secret, not the caller's
    assert out["callee"]["pid"] != out["pid"] and out["callee"]["x"] == 7
    rows = served.wait_status("jobs:work's caller", lambda rows: "shop:front" in rows["jobs:work"]["callers"])
    assert rows["jobs:work"]["replicas"]["ready"] == 1


def test_cls_from_name_reaches_its_parameter_set_and_enters_once(project: tuple[Served, Path]) -> None:
    served, _ = project
    first, second = front(served, what="model", x=2)
    assert (first["y"], second["y"]) == (6, 9) and first["loads"] == second["loads"] == 1
    assert first["pid"] == second["pid"]


@pytest.mark.parametrize(("what", "message"), [
    ("no-app", "Lookup failed for Function 'work' from the 'nowhere' app: App 'nowhere' not found"),
    ("no-name", "Lookup failed for Function 'missing' from the 'jobs' app: Function 'missing' is not defined in app 'jobs'"),
])
def test_from_name_of_what_is_not_served_is_modals_not_found(project: tuple[Served, Path], what: str, message: str) -> None:
    served, _ = project
    out = front(served, what=what)
    assert out["type"] == "NotFoundError" and out["message"].startswith(message), out


def test_a_save_reloads_only_its_own_app(project: tuple[Served, Path]) -> None:
    served, folder = project
    before = front(served, what="work")
    assert before["callee"]["version"] == 1
    shop_pids = {r["pid"] for r in served.by_name()["shop:front"]["replica_list"]}
    (folder / "jobs.py").write_text(JOBS.format(version=2))
    eventually(lambda: front(served, what="work")["callee"]["version"] == 2, 30, "the new jobs code")  # type: ignore[index]
    assert {r["pid"] for r in served.by_name()["shop:front"]["replica_list"]} == shop_pids
    assert front(served, what="work")["pid"] == before["pid"]


CLAIM = '''
import modal

app = modal.App("{name}")


@app.function()
@modal.fastapi_endpoint(label="same")
def first():
    return "{name}"


@app.function()
@modal.fastapi_endpoint()
def other():
    return "{name} other"
'''


def test_two_apps_claiming_one_label(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(CLAIM.format(name=name))
    listed = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "list", "a.py", "b.py", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 1
    expected = "The label 'same' is claimed by both `first` in a.py and `first` in b.py"
    assert expected in listed.stderr
    assert [app["app"] for app in json.loads(listed.stdout)["apps"]] == ["a", "b"]
    served = start_serve([tmp_path / "a.py", tmp_path / "b.py"], "--no-reload",
                         env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_for_line(expected)
        served.wait_status("the rest serving", lambda rows: rows["b:other"]["state"] == "running"
                           and rows["a:first"]["state"] == "running")
        assert "b:first" not in served.by_name()
        assert served.get("same").text == '"a"' and served.get("b-other").text == '"b other"'
    finally:
        stop_serve(served)
