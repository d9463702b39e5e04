"""Parametrized classes served for real: each distinct set of `modal.parameter()` values taken from the
query string gets a replica pool of its own, made on the first request that asks for it, removed once
it has scaled to zero, rolled on reload; a missing or malformed value is a 400 before any user code."""

from __future__ import annotations

from pathlib import Path

from .conftest import Served, hammering, start_serve, stop_serve
from .eventually import eventually

APP = """import os
import modal
app = modal.App("par")

@app.cls(scaledown_window=2)
class Greeter:
    name: str = modal.parameter()
    times: int = modal.parameter(default=1)

    @modal.enter()
    def setup(self):
        self.greeting = GREETING + " " + (self.name + " ") * self.times

    @modal.fastapi_endpoint()
    def greet(self):
        return {"greeting": self.greeting.strip(), "pid": os.getpid()}

    @modal.fastapi_endpoint()
    def who(self):
        return {"name": self.name, "pid": os.getpid()}


@app.cls()
class Defaults:
    size: int = modal.parameter(default=3)

    @modal.fastapi_endpoint()
    def size_of(self):
        return {"size": self.size}


GREETING = "hello"
"""


def _rows(served: Served) -> dict[str, dict]:
    return served.by_name()


def _reloads(served: Served, n: int, timeout: float = 30.0) -> None:
    eventually(lambda: sum("reloaded in" in line for line in served.lines) >= n, timeout,
               lambda: f"{n} reloads: {served.lines[-10:]}")


def test_each_set_of_values_gets_its_own_pool(tmp_path: Path) -> None:
    app = tmp_path / "par.py"
    app.write_text(APP)
    served = start_serve(app)
    try:
        served.wait_running()
        rows = _rows(served)
        # A class whose parameters all have defaults starts that set warm; one with a required
        # parameter starts nothing until a request names a value.
        assert rows["Greeter.greet"]["parameters"] == ["name", "times"]
        assert rows["Greeter.greet"]["replicas"]["ready"] == 0
        assert not [n for n in rows if n.startswith("Greeter.greet?")]
        assert served.get("par-defaults-size-of").json() == {"size": 3}
        assert rows["Defaults.size_of?size=3"]["variant_of"] == "Defaults.size_of"

        ann = served.get("par-greeter-greet", "/?name=ann")  # held while the new pool starts
        assert ann.status_code == 200 and ann.json()["greeting"] == "hello ann"
        twice = served.get("par-greeter-greet", "/?name=ann&times=2")
        assert twice.json()["greeting"] == "hello ann ann" and twice.json()["pid"] != ann.json()["pid"]
        # Spelling and order do not matter: `times=01&name=ann` is the same set as `name=ann&times=1`.
        again = served.get("par-greeter-greet", "/?times=01&name=ann&other=x")
        assert again.json()["pid"] == ann.json()["pid"]
        # A class's endpoints share the pool of a set of values, as they share a container on Modal.
        assert served.get("par-greeter-who", "/?name=ann").json() == {"name": "ann", "pid": ann.json()["pid"]}

        missing = served.get("par-greeter-greet", "/?times=2")
        assert missing.status_code == 400
        assert "Greeter.greet: missing required class parameter 'name'" in missing.text
        bad = served.get("par-greeter-greet", "/?name=a&times=many")
        assert bad.status_code == 400 and "'times' must be an integer, not 'many'" in bad.text

        rows = _rows(served)
        ann_row = rows["Greeter.greet?name=ann&times=1"]
        assert ann_row["variant_of"] == "Greeter.greet" and ann_row["params"] == {"name": "ann", "times": 1}
        assert ann_row["state"] == "running" and ann_row["replicas"]["ready"] == 1
        assert ann_row["url"].endswith("/?name=ann&times=1") and ann_row["requests_total"] >= 2
        assert ann_row["pool"] == "Greeter?name=ann&times=1"
        assert "Greeter.greet?name=ann&times=2" in rows and "Greeter.who?name=ann&times=1" in rows
        assert rows["Greeter.greet"]["state"] == "running"
        # The replica knows its values from --params and is named for its set, not for the class.
        [replica] = ann_row["replica_list"]
        assert replica["id"].startswith("Greeter~")

        # Idle past scaledown_window (2 s): each set scales to zero and its pool goes away.
        served.wait_status("removed the idle sets", lambda r: not [n for n in r if n.startswith("Greeter.greet?")])
        served.wait_for_line(r"Greeter\?name=ann&times=1: scaled to zero")
        back = served.get("par-greeter-greet", "/?name=ann")
        assert back.status_code == 200 and back.json()["pid"] != ann.json()["pid"]
        assert _rows(served)["Greeter.greet?name=ann&times=1"]["replicas"]["ready"] == 1
    finally:
        assert stop_serve(served) == 0


def test_a_reload_rolls_every_set_and_drops_sets_that_no_longer_fit(tmp_path: Path) -> None:
    app = tmp_path / "par.py"
    app.write_text(APP.replace("scaledown_window=2", "scaledown_window=60"))
    served = start_serve(app)
    try:
        served.wait_running()
        assert served.get("par-greeter-greet", "/?name=bo").json()["greeting"] == "hello bo"
        assert served.get("par-greeter-greet", "/?name=cy").json()["greeting"] == "hello cy"
        app.write_text(app.read_text().replace('GREETING = "hello"', 'GREETING = "hi"'))
        _reloads(served, 1)
        assert served.get("par-greeter-greet", "/?name=bo").json()["greeting"] == "hi bo"
        assert served.get("par-greeter-greet", "/?name=cy").json()["greeting"] == "hi cy"
        rows = _rows(served)
        assert rows["Greeter.greet?name=bo&times=1"]["generation"] == 2

        # A new required parameter: the old sets no longer describe a request, so they go; new ones
        # come from requests that name every value.
        app.write_text(app.read_text().replace(
            "    times: int = modal.parameter(default=1)\n",
            "    times: int = modal.parameter(default=1)\n    mood: str = modal.parameter()\n",
        ))
        _reloads(served, 2)
        assert "Greeter.greet?name=bo&times=1" not in _rows(served)
        assert served.get("par-greeter-greet", "/?name=bo").status_code == 400
        ok = served.get("par-greeter-greet", "/?name=bo&mood=glad")
        assert ok.status_code == 200 and ok.json()["greeting"] == "hi bo"

        # No parameters at all any more: a plain class, one pool, no query needed.
        text = app.read_text()
        for line in ("    name: str = modal.parameter()\n", "    times: int = modal.parameter(default=1)\n",
                     "    mood: str = modal.parameter()\n"):
            text = text.replace(line, "")
        app.write_text(text.replace("(self.name + \" \") * self.times", "\"all\""))
        _reloads(served, 3)
        # The status file is written on its own tick: wait for it to show the new plain pool ready.
        rows = served.wait_status("the plain pool ready",
                                  lambda r: r.get("Greeter.greet", {}).get("replicas", {}).get("ready") == 1)
        assert not [n for n in rows if "?" in n and n.startswith("Greeter.")]
        assert rows["Greeter.greet"]["parameters"] == []
        assert served.get("par-greeter-greet").json()["greeting"] == "hi all"
    finally:
        assert stop_serve(served) == 0


BURSTY = """import time
import modal
app = modal.App("bur")

@app.cls(max_containers=3, scaledown_window=2)
class Slow:
    name: str = modal.parameter()

    @modal.fastapi_endpoint()
    def work(self):
        time.sleep(0.3)
        return {"name": self.name}
"""


def test_each_set_autoscales_on_its_own_traffic(tmp_path: Path) -> None:
    app = tmp_path / "bur.py"
    app.write_text(BURSTY)
    served = start_serve(app)
    try:
        served.wait_running()
        assert served.get("bur-slow-work", "/?name=quiet").json() == {"name": "quiet"}
        # One client keeps the quiet set busy at one request at a time (else its scaledown_window of 2 s
        # could take it to zero while the busy set scales out on a slow machine).
        with hammering(served, "bur-slow-work.localhost", "/?name=quiet", clients=1) as quiet, \
                hammering(served, "bur-slow-work.localhost", "/?name=busy", clients=6) as codes:
            rows = served.wait_status("scaled the busy set out to 3",
                                      lambda r: r.get("Slow.work?name=busy", {}).get("replicas", {}).get("ready") == 3)
        assert set(codes) == {200} and set(quiet) == {200}
        assert rows["Slow.work?name=quiet"]["replicas"]["ready"] == 1  # its neighbour's burst is not its own
        assert any(" -> 3: " in ev for ev in rows["Slow.work?name=busy"]["scale_events"])
    finally:
        assert stop_serve(served) == 0
