"""A generation's snapshot: one process that imports the app once, runs the `@modal.enter(snap=True)`
methods of a class with `enable_memory_snapshot=True`, and then forks replicas ready to serve (Modal's
memory snapshot, done locally with fork).

    forked by the zygote (main "snapshot"): ARGV = <ref> --pool NAME --fd N

It is started by `engine.snapshots` with the environment of its pool's first replica (the environment
plan, the container view, mwtui's lifeline), and from then on speaks the zygote's protocol on fd N (see
zygote.py): its hello carries `snapshot`, what it did ({"import_ms", "snap_enters"}), or `unsafe`, why
forking it would be unsafe (the replica would then import the app itself), or `failed`, the import's
error. A child it forks runs the worker's main as any replica does; `taken()` tells that main that the
app is in memory already, so it skips the container view (inherited) and the import, and runs only the
`@enter` methods that are not `snap=True`, the build and the server.

A parametrized class's snapshot holds the imported module only: each set of values makes its instance
(and runs all its `@enter` methods) after the fork.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import lifeline
from ..loader import AppRef
from ..proctree import become_subreaper
from . import container
from .pool import Pool, import_app
from .report import StartupFailure, format_traceback

MAX_SPARES = 16  # children forked ahead at most (each holds little of its own: its page tables)

# Libraries whose state does not survive a fork (threads, device handles, connections made at import).
FORK_UNSAFE_MODULES = {
    "grpc": "gRPC keeps threads and connections that a forked child cannot use",
    "torch.cuda": "CUDA cannot be used in a process forked after it was initialized",
    "tensorflow": "TensorFlow starts threads at import",
    "jax": "JAX starts threads at import",
    "ray": "Ray connects to its cluster at import",
}


@dataclass
class Taken:
    """What the snapshot holds for the replicas forked from it."""

    ref: AppRef
    pool_name: str
    generation: str
    app: Any
    pool: Pool | None  # the prepared pool with its snap=True enters run; None for a parametrized class
    prebuilt: dict[str, Any]  # endpoint -> its fastapi_endpoint wrapper, built here for every replica

    def pool_for(self, params: dict[str, Any] | None) -> Pool:
        if self.pool is not None and not params:
            return self.pool
        return Pool.resolve(self.app, self.pool_name, self.ref.path, params)


_taken: Taken | None = None


def taken(ref: AppRef, pool_name: str) -> Taken | None:
    """In a replica forked from a snapshot of this app and pool: what the snapshot holds."""
    if _taken is not None and _taken.pool_name == pool_name and _taken.ref.path == ref.path:
        return _taken
    return None


def forked() -> bool:
    """Is this process a replica forked from a snapshot?"""
    return _taken is not None


def unsafe_reason() -> str | None:
    """Why forking this process now could hang or break the child, or None if it looks safe."""
    threads = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        names = ", ".join(sorted({t.name for t in threads})[:3])
        return f"the app started {len(threads)} thread(s) while it was imported ({names})"
    for name, why in FORK_UNSAFE_MODULES.items():
        if name in sys.modules:
            if name == "torch.cuda":
                with contextlib.suppress(Exception):
                    if sys.modules[name].is_initialized():  # type: ignore[attr-defined]
                        return why
                continue
            return f"it imports {name}: {why}"
    with contextlib.suppress(Exception):
        loop = asyncio.get_event_loop_policy()._local._loop  # type: ignore[attr-defined]
        if loop is not None and not loop.is_closed():
            return "the app made an event loop while it was imported (its file descriptors would be shared)"
    return None


def _import(ref: AppRef, pool_name: str) -> tuple[Any, Pool | None]:
    """Import the app and prepare the pool (None for a parametrized class: each set makes its own)."""
    app = import_app(ref, pool_name, supervised=True)  # discovery told its warnings, once for the generation
    klass = app._classes.get(pool_name)
    if klass is not None and klass.parameters:
        return app, None
    pool = Pool.resolve(app, pool_name, ref.path)
    pool.check_image_imports()
    return app, pool


def _snap_enters(pool: Pool | None) -> int:
    """A plain class with enable_memory_snapshot: its snap=True enters, once, here. How many ran."""
    if pool is None or not (pool.is_class and pool.options.extra.get("enable_memory_snapshot")):
        return 0
    loop = asyncio.new_event_loop()
    try:
        return pool.enter(loop.run_until_complete, snap=True)
    finally:
        loop.close()  # no loop may cross the fork: each replica makes its own
        asyncio.set_event_loop(None)


def _prebuild(pool: Pool | None) -> dict[str, Any]:
    """What every replica would build alike and runs no user code: the FastAPI wrapper of each
    fastapi_endpoint, its middleware stack made too. Anything that fails is left to the replicas."""
    from .fastapi_app import build_fastapi_app
    from .replica import worker_parser

    worker_parser()
    out: dict[str, Any] = {}
    for ep in pool.endpoints if pool is not None else ():
        if ep.web.kind != "fastapi":
            continue
        try:
            app = build_fastapi_app(ep.target, ep.web.method, ep.web.docs)
            app.middleware_stack = app.build_middleware_stack()
        except Exception:  # noqa: BLE001 - the replica builds it itself and reports what goes wrong
            continue
        out[ep.name] = app
    return out


def main(argv: list[str]) -> NoReturn:
    global _taken
    p = argparse.ArgumentParser(prog="mwtui snapshot")
    p.add_argument("app_ref")
    p.add_argument("--pool", required=True)
    p.add_argument("--generation", default="")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--spares", type=int, default=1, help="children to fork ahead at first (a rollout's)")
    args = p.parse_args(argv)
    started = time.monotonic()
    become_subreaper()  # the replicas it forks, and what they leave behind, stay below it
    sock = socket.socket(fileno=args.fd)
    sock.set_inheritable(False)
    raw = os.environ.get(lifeline.ENV_FD, "")
    life = int(raw) if raw.isdigit() else None
    os.environ["MODAL_IS_REMOTE"] = "1"
    container.setup_from_env(quiet=True)  # under mwtui: discovery told its problems
    ref = AppRef.parse(args.app_ref)
    hello: dict[str, Any] = {"hello": os.getpid()}
    try:
        app, pool = _import(ref, args.pool)
        # Checked before the snap=True enters too: those would otherwise run here and again per replica.
        reason = unsafe_reason()
        ran = _snap_enters(pool) if reason is None else 0
        reason = reason or unsafe_reason()
    except StartupFailure as f:
        hello["failed"] = f.message
    except Exception as exc:  # a bug of ours: the replicas import for themselves
        hello["failed"] = f"mwtui's snapshot failed: {exc}\n{format_traceback(exc)}"
    else:
        if reason is not None:
            hello["unsafe"] = reason
        else:
            _taken = Taken(ref, args.pool, args.generation, app, pool, _prebuild(pool))
            hello["snapshot"] = {"import_ms": round((time.monotonic() - started) * 1000, 1), "snap_enters": ran}
    from ..zygote import Zygote

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    zygote = Zygote(sock, life, spares=max(1, min(args.spares, MAX_SPARES)))
    zygote.send(hello)
    if _taken is None:
        zygote.exit()  # nothing to fork from: the engine's replicas import for themselves
    # As the zygote: no collection from here on (it would write to pages the children share).
    gc.collect()
    gc.disable()
    for _ in range(zygote.spares):
        zygote.fork_spare()
    zygote.serve(idle_imports=False)
