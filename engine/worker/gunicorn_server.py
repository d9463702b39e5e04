"""A lone `@modal.wsgi_app` function, served by gunicorn embedded in the replica process.

This process becomes gunicorn's master (arbiter) and forks one `gthread` worker; the user's factory
runs in that worker (`load`), and readiness is reported from the worker once it has the app
(`on_ready`, from gunicorn's post_worker_init hook). Both stay in the replica's process group, so the
lifeline takes them down together. SIGTERM and SIGINT both stop gracefully: the master stops
accepting and gives the worker's in-flight requests `graceful_seconds`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker


class _Arbiter(Arbiter):
    def handle_int(self) -> None:
        self.handle_term()  # gunicorn's SIGINT is a quick shutdown; ours drains like SIGTERM


class _Worker(ThreadWorker):
    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)


class _Application(BaseApplication):
    def __init__(self, settings: dict[str, Any], load: Callable[[], Any]) -> None:
        self._settings = settings
        self._load = load
        super().__init__()

    def load_config(self) -> None:
        # Only our settings: no gunicorn.conf.py from the app's folder, no GUNICORN_CMD_ARGS.
        for key, value in self._settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load()

    def run(self) -> None:
        _Arbiter(self).run()


def serve(
    *,
    fd: int,
    load: Callable[[], Any],
    threads: int,
    on_ready: Callable[[int], None],
    should_stop: Callable[[], bool],
    graceful_seconds: float,
    keepalive_seconds: int,
    name: str,
) -> None:
    """Serve on the listening unix socket `fd` (gunicorn takes it over) until stopped. Ends with
    SystemExit: 0 after a stop, 3 when the worker could not boot.

    `on_ready(master_pid)` runs in the worker; `should_stop()` tells whether a stop arrived before
    gunicorn took over the signals."""

    def when_ready(arbiter: Arbiter) -> None:
        if should_stop():
            arbiter.signal(signal.SIGTERM, None)

    settings: dict[str, Any] = {
        "bind": [f"fd://{fd}"],
        "workers": 1,
        "worker_class": _Worker,
        "threads": threads,
        "graceful_timeout": graceful_seconds,
        "timeout": 0,  # no heartbeat deadline: a slow factory is the supervisor's startup timeout to judge
        "keepalive": keepalive_seconds,
        "accesslog": None,  # the gateway logs access
        "errorlog": "-",
        "loglevel": "warning",
        "control_socket_disable": True,  # else gunicorn 25+ opens ~/.gunicorn/gunicorn.ctl
        "forwarded_allow_ips": "*",  # only the gateway reaches the socket: trust X-Forwarded-Proto
        "proc_name": name,
        "when_ready": when_ready,
        "post_worker_init": lambda worker: on_ready(worker.ppid),
    }
    _Application(settings, load).run()
