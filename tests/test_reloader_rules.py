"""The reloader's pure rules: which paths count, and the guard against self-triggered reloads."""

from mwtui.engine.reloader import ReloadGuard, Verdict, WatchRules, local_folders


def test_python_files_count_by_default() -> None:
    rules = WatchRules()
    assert rules.counts("/p/app.py")
    assert rules.counts("/p/pkg/mod.py")
    assert not rules.counts("/p/data.json")
    assert not rules.counts("/p/.venv/lib/x.py")
    assert not rules.counts("/p/__pycache__/app.cpython-311.pyc")
    assert not rules.counts("/p/node_modules/a/b.py")
    assert not rules.counts("/p/build/lib/app.py")
    assert not rules.counts("/p/thing.egg-info/x.py")
    assert not rules.counts("/p/.app.py.swp")


def test_include_and_exclude_patterns() -> None:
    rules = WatchRules(include=("*.py", "*.html"), exclude=("*/generated/*", "secret_*.py"),
                       extra_ignored_paths=("/p/home",))
    assert rules.counts("/p/templates/index.html")
    assert not rules.counts("/p/generated/x.py")
    assert not rules.counts("/p/secret_keys.py")
    assert not rules.counts("/p/home/tokens.py")


def _loop(g: ReloadGuard, path: str, times: int, now: float) -> tuple[list[Verdict], float]:
    """`path` changes while each reload it caused runs, `times` times; the first change came from outside."""
    verdicts = []
    for i in range(times):
        verdicts.append(g.filter([path], now, busy=i > 0))
        g.busy(now + 0.5)  # the reload it caused ends
        now += 0.7
    return verdicts, now


def test_guard_silences_a_path_that_changes_whenever_the_app_starts() -> None:
    g = ReloadGuard(window_s=1.0, strikes=3, app_file="/p/app.py")
    verdicts, now = _loop(g, "/p/gen.py", 4, 100.0)
    assert [v.keep for v in verdicts[:3]] == [["/p/gen.py"]] * 3  # the outside change, then two strikes
    assert verdicts[3] == Verdict([], ["/p/gen.py"], [], [])
    assert g.silenced == {"/p/gen.py"}
    assert g.filter(["/p/gen.py", "/p/app.py"], now, busy=True).keep == ["/p/app.py"]


def test_the_app_file_is_never_silenced_nor_reported() -> None:
    g = ReloadGuard(window_s=1.0, strikes=3, app_file="/p/app.py")
    g.protect(["/p/app.py"])
    # Ten saves 0.9 s apart, each during (or just after) the reload the previous one caused.
    now = 10.0
    for _ in range(10):
        assert g.filter(["/p/app.py"], now, busy=True) == Verdict(["/p/app.py"], [], [], [])
        g.busy(now + 0.6)
        now += 0.9
    assert not g.silenced


def test_an_imported_module_that_loops_keeps_reloading_and_is_reported_once() -> None:
    g = ReloadGuard(window_s=1.0, strikes=2, app_file="/p/app.py")
    g.protect(["/p/app.py", "/p/schema_gen.py"])
    verdicts, _ = _loop(g, "/p/schema_gen.py", 5, 0.0)
    assert all(v.keep == ["/p/schema_gen.py"] for v in verdicts)
    assert [v.looping for v in verdicts] == [[], [], ["/p/schema_gen.py"], [], []]
    assert not g.silenced


def test_a_change_while_nothing_reloads_is_a_persons_save() -> None:
    g = ReloadGuard(window_s=1.0, strikes=2, app_file="/p/app.py")
    _, now = _loop(g, "/p/gen.py", 3, 0.0)
    assert g.silenced == {"/p/gen.py"}
    # While the app starts (a replica, a reload), its writes stay silent.
    assert g.filter(["/p/gen.py"], now + 5.0, busy=True).keep == []
    # Long after the last reload, nothing of the app running: a person's save reloads, and counts anew.
    assert g.filter(["/p/gen.py"], now + 10.0) == Verdict(["/p/gen.py"], [], ["/p/gen.py"], [])
    g.busy(now + 10.5)
    assert g.filter(["/p/gen.py"], now + 10.8).keep == ["/p/gen.py"]  # one strike
    assert not g.silenced


def test_silence_lifts_after_a_quiet_period_one_strike_from_silenced_again() -> None:
    g = ReloadGuard(window_s=1.0, strikes=3, quiet_s=30.0, app_file="/p/app.py")
    _, now = _loop(g, "/p/gen.py", 4, 0.0)
    assert g.silenced == {"/p/gen.py"}
    assert g.expire(now + 10.0) == []
    g.filter(["/p/gen.py"], now + 20.0, busy=True)  # the app wrote it again: the quiet period restarts
    assert g.expire(now + 45.0) == []
    assert g.expire(now + 51.0) == ["/p/gen.py"]
    assert not g.silenced
    # The next reload (a person saved the app file) rewrites it: silenced at once, no reload for it.
    g.busy(now + 60.0)
    assert g.filter(["/p/gen.py"], now + 60.2, busy=True) == Verdict([], ["/p/gen.py"], [], [])


def test_a_protected_path_is_never_silenced_even_if_it_was() -> None:
    g = ReloadGuard(window_s=1.0, strikes=2, app_file="/p/app.py")
    _loop(g, "/p/helper.py", 3, 0.0)
    assert g.silenced == {"/p/helper.py"}
    g.protect(["/p/app.py", "/p/helper.py"])  # the next load imports it: a person's module
    assert not g.silenced


def test_local_folders_skip_installed_packages() -> None:
    import fastapi

    folders = local_folders("/proj/app.py", ["/proj/app.py", "/proj/sub/m.py", "/shared/lib/util.py",
                                             fastapi.__file__])
    assert folders == ["/proj", "/shared/lib"]


def test_forget_bytecode_removes_only_that_files_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    import os
    import py_compile

    from mwtui.engine.reloader import forget_bytecode

    app, other = tmp_path / "app.py", tmp_path / "other.py"
    app.write_text("x = 1\n")
    other.write_text("y = 1\n")
    for f in (app, other):
        py_compile.compile(str(f), cfile=importlib.util.cache_from_source(str(f)))
    forget_bytecode([str(app), str(tmp_path / "notes.txt")])
    assert not os.path.exists(importlib.util.cache_from_source(str(app)))
    assert os.path.exists(importlib.util.cache_from_source(str(other)))
