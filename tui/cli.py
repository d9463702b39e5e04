"""`mwtui` command line: the terminal app by default, `serve` headless, `list` to inspect a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from importlib import resources
from typing import Any

from mwtui.engine.discovery import discover
from mwtui.engine.loader import AppRef
from mwtui.engine.manifest import AppManifest, LoadError
from mwtui.engine.ports import DEFAULT_GATEWAY_PORT
from mwtui.engine.version import version

from .cli_values import checked_app, checked_module, port, url_port

SUBCOMMANDS = ("serve", "list", "token", "secret", "export", "worker", "completion")
# Subcommands that live in a module of their own, `tui/commands/<name>.py`, each with
# `add_parser(subparsers)` and `run(args) -> int`. A module not written yet leaves its name unknown.
PLUGGED = ("token", "secret", "export", "worker", "completion")


def demo_app_path() -> str:
    return str(resources.files("mwtui.assets").joinpath("demo", "demo.py"))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address the gateway listens on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=port, default=DEFAULT_GATEWAY_PORT,
        help=f"gateway port (default {DEFAULT_GATEWAY_PORT}; 0 picks a free one)",
    )
    p.add_argument("--no-reload", action="store_true", help="do not watch the app's files")
    p.add_argument(
        "--reload-include", action="append", default=[], metavar="GLOB",
        help="also reload when files matching GLOB change (default: *.py only); repeatable",
    )
    p.add_argument(
        "--reload-exclude", action="append", default=[], metavar="GLOB",
        help="never reload for files matching GLOB; repeatable",
    )
    p.add_argument(
        "--no-own-ports", action="store_true", help="serve endpoints only through the gateway's port, by label"
    )
    from mwtui.engine.gateway.limits import add_arguments

    add_arguments(p)  # --max-body, --header-timeout, --keepalive-timeout, --buffer-body, --body-timeout, ...
    from mwtui.engine.autoscaler import DEFAULT_MAX_REPLICAS

    p.add_argument(
        "--max-replicas", type=_replica_cap, default=DEFAULT_MAX_REPLICAS, metavar="N",
        help=f"most replicas per endpoint whose app sets no max_containers (default {DEFAULT_MAX_REPLICAS}; "
             "0: no cap, as on Modal); max_containers, where set, wins",
    )
    p.add_argument(
        "--cold-start", action="store_true",
        help="start every replica as a fresh Python process instead of forking it from a pre-imported zygote",
    )
    p.add_argument(
        "--no-container", action="store_true",
        help="host mode: replicas see the host's file system only, not their own container view "
             "(image files and volumes at their container paths; Linux)",
    )


def _replica_cap(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of replicas")
    return int(text)


def _app_argument(p: argparse.ArgumentParser, default: str | None = None) -> None:
    fallback = f"; else {default}" if default else ""
    p.add_argument(
        "app", nargs="*",
        help="path/to/app.py or path/to/app.py::app_variable; several are served together (default: the "
             f"apps listed under [tool.mwtui] apps in ./pyproject.toml{fallback})",
    )
    p.add_argument("-m", dest="module", metavar="PACKAGE.MODULE[::app]",
                   help="import the app as a module, as `modal serve -m` does (from the current folder)")


def app_refs(args: argparse.Namespace, default: str | None = None) -> list[AppRef]:
    """The apps to serve: those named, else the project's (`[tool.mwtui] apps`), else `default`."""
    if args.module:
        return [checked_module(args.module), *(checked_app(AppRef.parse(a)) for a in args.app)]
    apps = list(args.app)
    if not apps:
        from mwtui.engine.project import ProjectError, project_apps

        try:
            apps = project_apps(os.getcwd()) or ([default] if default else [])
        except ProjectError as exc:
            raise SystemExit(f"mwtui: {exc}") from None
    if not apps:
        raise SystemExit("mwtui: name an app file (path/to/app.py) or a module (-m package.module), or list "
                         "them in ./pyproject.toml under [tool.mwtui] apps")
    refs = [checked_app(AppRef.parse(a)) for a in apps]
    paths = [r.path for r in refs]
    twice = next((p for p in paths if paths.count(p) > 1), None)
    if twice is not None:
        raise SystemExit(f"mwtui: {twice} is named twice")
    return refs


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mwtui",
        description="Run a Modal web app file locally, unchanged, and watch and drive it live.",
    )
    _version_flag(p)
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the app headless: print URLs, then logs, until Ctrl-C")
    _app_argument(serve)
    _common(serve)
    ls = sub.add_parser("list", help="print the app's endpoints; exit 1 if the file does not load")
    _app_argument(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--port", type=url_port, default=DEFAULT_GATEWAY_PORT, help="gateway port used in the URLs")
    for name in PLUGGED:
        module = _command_module(name)
        if module is not None:
            module.add_parser(sub)
    return p


def _command_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"mwtui.tui.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"mwtui.tui.commands.{name}":
            raise
        return None


def build_tui_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mwtui",
        description="Open the terminal app on a Modal web app file (the bundled demo without one). "
        "Other commands: mwtui serve APP, mwtui list APP, mwtui token ...",
    )
    _version_flag(p)
    _app_argument(p, default="the bundled demo")
    _common(p)
    return p


class Parser(argparse.ArgumentParser):
    """`--help` opens with the version, on a line of its own."""

    def format_help(self) -> str:
        return f"mwtui {version()}\n" + super().format_help()


def _version_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"mwtui {version()}")


def format_load_error(err: LoadError) -> str:
    return f"mwtui: {err.message}"


def _manifest_json(m: AppManifest, port: int) -> dict[str, object]:
    from mwtui.engine.facade import label_url

    keep = (
        "name", "kind", "label", "method", "docs", "requires_proxy_auth", "custom_domains", "port",
        "startup_timeout", "min_containers", "max_containers", "buffer_containers", "scaledown_window",
        "timeout", "max_inputs", "target_inputs", "pool", "source", "schedule",
    )
    parameters = {pool.name: pool.parameters for pool in m.pools()}
    endpoints = []
    for e in m.endpoints:
        d = e.to_json()
        out = {k: d[k] for k in keep}
        out["url"] = None if e.is_call else label_url(e.label, port)
        out["parameters"] = parameters.get(e.pool, [])  # a parametrized class's, from the query string
        endpoints.append(out)
    return {"app": m.app_name, "file": m.file, "endpoints": endpoints, "warnings": list(m.warnings)}


def cmd_list(args: argparse.Namespace) -> int:
    refs = app_refs(args)
    if len(refs) > 1:
        return _list_several(args, refs)
    m = discover(refs[0])
    if m.error:
        if args.json:  # for a program: the error as data on stdout, the person's text on stderr
            err = m.error
            print(json.dumps({"error": {"file": err.file, "line": err.line, "message": err.message}}, indent=2))
        print(format_load_error(m.error), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_manifest_json(m, args.port), indent=2))
        return 0
    _print_manifest(m, args.port)
    return 0


def _print_manifest(m: AppManifest, port: int) -> None:
    from mwtui.engine.facade import label_url

    print(f"{m.app_name} ({os.path.relpath(m.file)}): {len(m.endpoints)} endpoint(s)")
    width = max((len(e.name) for e in m.endpoints), default=4)
    parameters = {pool.name: pool.parameters for pool in m.pools()}
    for e in m.endpoints:
        kind = f"{e.kind} {e.method}" if e.kind == "fastapi" else e.kind
        extra = " (proxy auth)" if e.requires_proxy_auth else ""
        if parameters.get(e.pool):
            shown = [p["name"] + (f"={json.dumps(p['default'])}" if "default" in p else "") for p in parameters[e.pool]]
            extra += f" (class parameters from the query: {', '.join(shown)})"
        where = label_url(e.label, port)
        if e.is_call:
            from mwtui.engine.schedules import describe

            where = (f"runs {describe(e.schedule)}, and on calls" if e.schedule else "called by the app's code") + " (no URL)"
        print(f"  {e.name:<{width}}  {kind:<12} {where}{extra}")
    for w in m.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _list_several(args: argparse.Namespace, refs: list[AppRef]) -> int:
    """`mwtui list a.py b.py`: each app's endpoints, scoped as they are served together; exit 1 if any
    file does not load or two apps claim one label."""
    from mwtui.engine.project import clashes, scope_manifest, scopes

    manifests = [discover(ref) for ref in refs]
    broken = [m for m in manifests if m.error]
    scoped = [scope_manifest(m, scope) for m, scope in zip(manifests, scopes(refs), strict=True)]
    problems = [msg for _, messages in clashes([m for m in scoped if not m.error]) for msg in messages]
    if args.json:
        out: dict[str, object] = {"apps": [
            {"error": {"file": m.error.file, "line": m.error.line, "message": m.error.message}} if m.error
            else _manifest_json(m, args.port) for m in scoped]}
        if problems:
            out["errors"] = problems
        print(json.dumps(out, indent=2))
    for m in scoped:
        if m.error:
            print(format_load_error(m.error), file=sys.stderr)
        elif not args.json:
            _print_manifest(m, args.port)
    for problem in problems:
        print(f"mwtui: {problem}", file=sys.stderr)
    return 1 if broken or problems else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return cmd_list(args)
        if args.command in PLUGGED:
            return int(_command_module(args.command).run(args))
        from .headless import serve

        return asyncio.run(serve(app_refs(args), engine_options(args)))
    args = build_tui_parser().parse_args(argv)
    from .app import run_tui

    return run_tui(app_refs(args, default=demo_app_path()), engine_options(args))


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Engine's keyword arguments from the common flags."""
    from mwtui.engine.gateway.limits import Limits
    from mwtui.engine.reloader import DEFAULT_INCLUDE, WatchRules
    from mwtui.engine.spawner import ColdSpawner
    from mwtui.engine.store.home import mwtui_home

    # One definition: an empty MWTUI_HOME means the default, never "" (that would ignore the current
    # folder, the app's own when mwtui runs from it, and so turn reload off without a word).
    home = str(mwtui_home())
    if args.no_container:
        from mwtui.engine.worker.container import CONTAINER_ENV

        os.environ[CONTAINER_ENV] = "0"  # replicas inherit the engine's environment
    rules = WatchRules(
        include=DEFAULT_INCLUDE + tuple(args.reload_include),
        exclude=tuple(args.reload_exclude),
        extra_ignored_paths=(os.path.abspath(home),),
    )
    return {
        "host": args.host,
        "port": args.port,
        "own_ports": not args.no_own_ports,
        "reload": not args.no_reload,
        "wait_for_fix": not args.no_reload,
        "watch_rules": rules,
        "limits": Limits.from_args(args),
        "max_replicas": args.max_replicas,
        **({"spawner": ColdSpawner()} if args.cold_start else {}),
    }


if __name__ == "__main__":
    sys.exit(main())
