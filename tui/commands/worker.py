"""`mwtui worker APP --pool NAME`: one replica of one pool, on its own: no gateway, no screen.

This is a container's command (see `mwtui export knative`): the same replica entry point mwtui runs
locally behind its gateway, listening on `$PORT` (8080 when unset) on all interfaces unless `--listen`
says otherwise. It runs in this process, so that as PID 1 it gets the platform's SIGTERM directly and
drains, runs lifespan shutdowns and `@exit`, as locally.

Named secrets in a container: `Secret.from_name(NAME)` is looked up in mwtui's store, which a container
does not have; there the values arrive as environment variables (the Service's `envFrom`). The exported
Service says which named secrets the pool uses in MWTUI_SECRETS_FROM_ENV ({"NAME": [required keys]});
then this command gives the replica a private store (a fresh MWTUI_HOME) holding each of those secrets
with its required keys taken from the environment, the same values, so the lookup succeeds and nothing
else changes; a required key missing from the environment stops it with a message naming the
Kubernetes side of the fix.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
from typing import Any

from mwtui.engine import scratch

DEFAULT_PORT = 8080  # Knative's (and Cloud Run's) $PORT when the container names none
SECRETS_ENV = "MWTUI_SECRETS_FROM_ENV"


def secrets_from_environment() -> str | None:
    """Set up the private store described above, if asked to; an error message when it cannot be."""
    raw = os.environ.get(SECRETS_ENV, "").strip()
    if not raw:
        return None
    try:
        wanted = json.loads(raw)
        if not isinstance(wanted, dict) or not all(isinstance(v, list) for v in wanted.values()):
            raise ValueError("not an object of lists")
    except ValueError as e:
        return f"{SECRETS_ENV} must be a JSON object {{secret name: [required keys]}} ({e})"
    missing = {name: [k for k in keys if k not in os.environ] for name, keys in wanted.items()}
    problems = [f"Secret '{n}' needs {', '.join(keys)}" for n, keys in missing.items() if keys]
    if problems:
        return ("; ".join(problems) + ", missing from the container's environment: add them to the Kubernetes "
                "Secret the Service names in envFrom (see `mwtui export knative`)")
    from mwtui.engine.store.secrets import SecretStore

    # Never a real store: this one is ours, removed on the way out (or by a later mwtui's sweep).
    home = os.environ["MWTUI_HOME"] = scratch.make("home")
    atexit.register(_remove_home, home, os.getpid())
    store = SecretStore()
    for name, keys in wanted.items():
        store.set(str(name), {k: os.environ[k] for k in keys}, replace=True)
    return None


def _remove_home(home: str, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child (gunicorn's workers run atexit too)
        shutil.rmtree(home, ignore_errors=True)


def default_listen() -> str:
    port = os.environ.get("PORT", "").strip() or str(DEFAULT_PORT)
    return f"tcp:0.0.0.0:{port}"


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="serve one pool of the app on its own (a container's command): no gateway, no screen",
        description="Serve one pool (a web function, or a class with its web methods) on $PORT, as "
        "mwtui's own replicas do behind the gateway. A class with several web methods routes by the "
        "x-mwtui-endpoint header, then by Host (custom domain or label), else to its first web method.",
    )
    p.add_argument("app", help="path/to/app.py or path/to/app.py::app_variable")
    p.add_argument("--pool", required=True, help="a web function's name, or a class's name")
    p.add_argument(
        "--listen", default=None, metavar="tcp:HOST:PORT",
        help="where to listen (default tcp:0.0.0.0:$PORT, $PORT defaulting to 8080)",
    )


def run(args: argparse.Namespace) -> int:
    from mwtui.engine.loader import AppRef
    from mwtui.engine.worker.listen import Listen
    from mwtui.engine.worker.replica import main
    from mwtui.tui.cli_values import checked_app

    checked_app(AppRef.parse(args.app))
    listen = args.listen or default_listen()
    if not args.listen:  # a bad --listen is the replica's parser's to refuse; a bad $PORT is not a flag
        try:
            Listen.parse(listen)
        except ValueError:
            print(f"mwtui: $PORT must be a port number 1-65535, got {os.environ.get('PORT', '')!r}", file=sys.stderr)
            return 1
    error = secrets_from_environment()
    if error:
        print(f"mwtui: {error}", file=sys.stderr)
        return 1
    main([args.app, "--pool", args.pool, "--listen", listen])  # exits the process when the replica stops
    return 0
