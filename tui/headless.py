"""`mwtui serve`: the engine without a screen. URLs first, like `modal serve`, then prefixed logs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from mwtui.engine.facade import Engine, GatewayError, LoadFailed, Snapshot
from mwtui.engine.loader import AppRef
from mwtui.engine.supervisor import Event, LogLine, PoolChanged


def _say(text: str = "", err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def display_path(path: str) -> str:
    """Relative to where the user stands if that is shorter, else as given."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def print_endpoints(snap: Snapshot) -> None:
    _say(f"✓ mwtui serving {snap.app_name} ({display_path(snap.file)})")
    _say(f"  gateway {snap.gateway_url}  (index, /api/endpoints, /metrics)")
    width = max((len(e.name) for e in snap.endpoints), default=4)
    for e in snap.endpoints:
        s = e.spec
        kind = f"{s.kind} {s.method}" if s.kind == "fastapi" else s.kind
        auth = "  (proxy auth)" if s.requires_proxy_auth else ""
        _say(f"  {e.name:<{width}}  {kind:<12} => {e.url}{auth}")
        port = e.url.rsplit(":", 1)[1]
        for domain in s.custom_domains:
            _say(f"  {'':<{width}}  {'':<12}    custom domain: http://{domain}:{port}")
    for w in snap.warnings:
        _say(f"warning: {w}", err=True)


async def serve(ref: AppRef, options: dict[str, Any]) -> int:
    engine = Engine(ref, **options)
    width = 16
    announced: set[tuple[str, str]] = set()

    def on_event(ev: Event) -> None:
        if isinstance(ev, LogLine):
            _say(f"{ev.replica:<{width}} | {ev.text}")
        elif isinstance(ev, PoolChanged):
            pool = engine.pools.get(ev.pool)
            if pool and pool.state in ("running", "failed") and (ev.pool, pool.state) not in announced:
                announced.add((ev.pool, pool.state))
                word = "ready" if pool.state == "running" else "FAILED"
                suffix = pool.variant.suffix if pool.variant else ""  # a parameter set: say which
                names = ", ".join(e.name + suffix for e in pool.spec.endpoints)
                _say(f"{'mwtui':<{width}} | {names}: {word}")

    engine.subscribe(on_event)
    try:
        snap = await engine.start()
    except LoadFailed as e:
        _say(f"mwtui: {e.error.message}", err=True)
        await engine.close()
        return 1
    except GatewayError as e:
        _say(f"mwtui: {e}", err=True)
        await engine.close()
        return 1
    if snap.error is not None:
        # Reload is on: the next good save brings the endpoints up (and their URLs get printed then).
        _say(f"mwtui: {snap.error.message}", err=True)
        _say(f"  gateway {snap.gateway_url}  (index, /api/endpoints, /metrics)")
        _say(f"{'mwtui':<{width}} | waiting for a save that loads ({display_path(snap.file)})")

        async def announce_when_loaded() -> None:
            while engine.manifest is None:
                await asyncio.sleep(0.05)
            print_endpoints(engine.snapshot())

        announcer = asyncio.get_running_loop().create_task(announce_when_loaded())
    else:
        print_endpoints(snap)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if snap.error is not None:
        announcer.cancel()
    _say(f"{'mwtui':<{width}} | stopping: draining in-flight requests")
    await engine.close()
    return 0
