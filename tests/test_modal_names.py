"""`-m` finds what Python's import machinery finds (as `modal serve -m`), and user code sees Modal's names
for the stand-in's exceptions and classes (`modal.exception.InvalidError`, `modal.app.App`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mwtui.engine.discovery import discover
from mwtui.engine.loader import AppRef

from .conftest import start_serve, stop_serve

# A handler that uses the API wrongly and reports what the exception looks like from user code.
APP = textwrap.dedent('''
    import pickle
    import traceback

    import modal

    app = modal.App("{name}")


    @app.function()
    @modal.fastapi_endpoint()
    def names():
        try:
            modal.App(name=3)
        except modal.exception.InvalidError as e:
            err = e
        copy = pickle.loads(pickle.dumps(err))
        return {{
            "type": f"{{type(err).__module__}}.{{type(err).__qualname__}}",
            "traceback": "".join(traceback.format_exception(err)),
            "pickled": type(copy) is type(err),
            "app": repr(modal.App),
        }}
''')


def _mwtui(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mwtui.tui.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MWTUI_HOME": str(cwd / "home")})


def _project(tmp_path: Path, folder: str, name: str) -> Path:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "app.py").write_text(APP.format(name=name))
    return tmp_path


def test_serve_m_through_a_hyphenated_folder(tmp_path: Path) -> None:
    _project(tmp_path, "my-proj", "hy")
    served = start_serve("my-proj.app", "--no-reload", module=True, cwd=tmp_path,
                         env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_running()
        body = served.get("hy-names").json()
        # Modal's names, as user code sees them on Modal, from a replica that imported `my-proj.app`
        assert body["type"] == "modal.exception.InvalidError"
        assert "modal.exception.InvalidError: Invalid value for `name`" in body["traceback"]
        assert "mwtui.engine.sdk" not in body["traceback"]
        assert body["pickled"] is True
        assert body["app"] == "<class 'modal.app.App'>"
    finally:
        stop_serve(served)


def test_list_m_through_a_leading_digit_folder(tmp_path: Path) -> None:
    _project(tmp_path, "2024", "digits")
    done = _mwtui(tmp_path, "list", "-m", "2024.app", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["file"] == str(tmp_path / "2024" / "app.py") and [e["label"] for e in data["endpoints"]] == [
        "digits-names"
    ]
    ref = AppRef.for_module("2024.app", root=str(tmp_path))
    assert AppRef.parse(str(ref)) == ref  # as replicas and discovery read it back


def test_a_module_ref_reads_back_with_odd_folder_names(tmp_path: Path) -> None:
    for folder in ("my-proj", "2024", "at@home"):
        _project(tmp_path, folder, "x")
        ref = AppRef.for_module(f"{folder}.app", "app", root=str(tmp_path))
        assert ref.path == str(tmp_path / folder / "app.py") and ref.stem == "app" and ref.cwd == str(tmp_path)
        assert AppRef.parse(str(ref)) == ref  # the form discovery and replicas are given


@pytest.mark.parametrize(("module", "message"), [
    ("nosuch.mod", "mwtui: no module named 'nosuch.mod' under {tmp}"),
    ("my-proj", "mwtui: 'my-proj' is a folder ({tmp}/my-proj), not a module: name the Python file in it"),
    ("my-proj.nope", "mwtui: no module named 'my-proj.nope' under {tmp}"),
    (".app", "mwtui: -m '.app' is not a module path"),
    ("my-proj..app", "mwtui: -m 'my-proj..app' is not a module path"),
])
def test_a_module_that_is_not_there_is_one_line_and_exit_1(tmp_path: Path, module: str, message: str) -> None:
    _project(tmp_path, "my-proj", "hy")
    done = _mwtui(tmp_path, "list", "-m", module)
    assert done.returncode == 1
    assert done.stderr.strip() == done.stderr.strip().splitlines()[0], done.stderr  # one line
    assert done.stderr.startswith(message.format(tmp=tmp_path)) and "Traceback" not in done.stderr


def test_an_import_error_inside_the_module_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "my-proj").mkdir()
    (tmp_path / "my-proj" / "app.py").write_text("import modal\napp = modal.App()\nraise ValueError('boom')\n")
    done = _mwtui(tmp_path, "list", "-m", "my-proj.app")
    assert done.returncode == 1
    assert done.stderr.strip() == "mwtui: app.py:3: importing app.py raised ValueError: boom"


def test_a_broken_modal_rule_shows_modal_exception_names(tmp_path: Path) -> None:
    app = tmp_path / "bad.py"
    app.write_text("import modal\n\napp = modal.App(image='python:3.12')\n")
    m = discover(AppRef.parse(str(app)))
    assert m.error is not None
    assert "modal.exception.InvalidError: `image=` has to be a `modal.Image` object" in m.error.traceback
    assert "mwtui.engine.sdk" not in m.error.traceback


def test_exceptions_and_classes_carry_modal_names_and_pickle_in_a_stand_in_process() -> None:
    code = textwrap.dedent('''
        import pickle
        from mwtui.engine.loader import install_sdk

        install_sdk()
        import modal
        import modal.exception

        for name in ("Error", "InvalidError", "NotFoundError", "FunctionTimeoutError", "InputCancellation"):
            cls = getattr(modal.exception, name)
            assert (cls.__module__, cls.__qualname__) == ("modal.exception", name), cls
            e = cls("msg")
            copy = pickle.loads(pickle.dumps(e))
            assert type(copy) is cls and copy.args == ("msg",), copy
        for name, home in (("App", "modal.app"), ("Function", "modal.functions"), ("Cls", "modal.cls"),
                           ("Volume", "modal.volume"), ("Secret", "modal.secret"), ("Image", "modal.image"),
                           ("Dict", "modal.dict"), ("Queue", "modal.queue"), ("Retries", "modal.retries")):
            cls = getattr(modal, name)
            assert cls.__module__ == home and pickle.loads(pickle.dumps(cls)) is cls, cls
        print("ok")
    ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_our_own_subclasses_show_modal_names_and_still_pickle() -> None:
    """FunctionCall.get's timeout and a missing secret print as Modal's classes, and survive a trip
    through pickle (a spawned call's exception does) as themselves."""
    import builtins
    import pickle
    import traceback

    from mwtui.engine.sdk.calls import CallTimeout
    from mwtui.engine.sdk.secret import SecretError

    for err, shown in ((CallTimeout("fc-1 has not finished"), "modal.exception.TimeoutError: fc-1 has not finished"),
                       (SecretError("Secret 'api' not found"), "modal.exception.NotFoundError: Secret 'api' not found")):
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        assert text == shown
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.args == err.args
    assert isinstance(pickle.loads(pickle.dumps(CallTimeout("x"))), builtins.TimeoutError)
