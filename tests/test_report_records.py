"""The records a replica writes on its readiness pipe and the supervisor reads back: one definition,
so what one side writes the other reads the same."""

from __future__ import annotations

import json

import pytest
from mwtui.engine.worker.report import (
    Beat,
    Failed,
    Ready,
    Report,
    Retire,
    Starting,
    StartupFailure,
    Upstream,
    decode,
    encode,
)

RECORDS: list[Report] = [
    Starting("importing app.py"),
    Starting("running @modal.enter method `load`", 12.5),
    Ready(4242, 31.4, {"hello": Upstream("unix:/tmp/s/hello.0.sock"), "Cls.a": Upstream("tcp:127.0.0.1:9", "Cls.a")}),
    Failed("import", None, "app.py:3: ValueError: boom", "Traceback ...\n"),
    Retire("a request's work outlived its timeout"),
    Beat(),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_each_record_reads_back_as_written(record: Report) -> None:
    line = encode(record)
    assert line.endswith("\n") and line.count("\n") == 1
    assert decode(line.encode()) == record


def test_the_wire_form_names_the_event() -> None:
    # What a person sees when a replica runs by hand (its reports go to stderr), and what older
    # readers of the pipe parse: keep the names.
    assert [json.loads(encode(r))["event"] for r in RECORDS] == [
        "starting", "starting", "ready", "failed", "retire", "beat"]


@pytest.mark.parametrize("line", [b"", b"hello from print()", b"{}", b'{"event": "ready"}', b"[1, 2]",
                                  b'{"event": "launch"}', b'{"event": "ready", "upstreams": 3}'])
def test_anything_else_on_the_pipe_is_no_record(line: bytes) -> None:
    assert decode(line) is None


def test_a_startup_failure_reports_as_failed() -> None:
    f = StartupFailure("lifespan", "web", "endpoint `web`: lifespan failed", "Traceback\n")
    assert f.report() == Failed("lifespan", "web", "endpoint `web`: lifespan failed", "Traceback\n")
