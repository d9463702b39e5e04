"""The reloader's pure rules: which paths count, and the guard against self-triggered reloads."""

from mwtui.engine.reloader import ReloadGuard, WatchRules, local_folders


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


def test_guard_ignores_a_path_that_changes_after_every_reload() -> None:
    g = ReloadGuard(window_s=1.0, strikes=3)
    now = 100.0
    for _ in range(3):  # the first change is the user's; the next two follow reloads closely
        keep, ignored = g.filter(["/p/gen.py"], now)
        assert keep == ["/p/gen.py"] and ignored == []
        g.reload_done(now + 0.5)
        now += 0.7  # changes again 0.2 s after the reload it caused
    keep, ignored = g.filter(["/p/gen.py"], now)
    assert keep == [] and ignored == ["/p/gen.py"]
    assert g.filter(["/p/gen.py", "/p/app.py"], now + 100)[0] == ["/p/app.py"]


def test_guard_forgives_changes_that_come_later() -> None:
    g = ReloadGuard(window_s=1.0, strikes=2)
    g.filter(["/p/app.py"], 10.0)
    g.reload_done(10.5)
    assert g.filter(["/p/app.py"], 10.8)[0] == ["/p/app.py"]  # one strike
    g.reload_done(11.0)
    assert g.filter(["/p/app.py"], 30.0)[0] == ["/p/app.py"]  # a pause: the count starts over
    g.reload_done(30.5)
    assert g.filter(["/p/app.py"], 30.9)[0] == ["/p/app.py"]


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
