"""How a replica process comes to be. The supervisor asks a spawner; it does not care how.

`ColdSpawner` starts a fresh interpreter (`python -m mwtui.engine.worker …`): slow (every replica
imports uvicorn, FastAPI, pydantic again) but simple, and the fallback for everything else.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Protocol


class ReplicaProcess(Protocol):
    """What the supervisor needs of a running replica: asyncio.subprocess.Process has all of it."""

    @property
    def pid(self) -> int: ...

    @property
    def stdout(self) -> AsyncIterator[bytes] | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class Spawner(Protocol):
    async def spawn(
        self, worker_argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> ReplicaProcess:
        """Start `mwtui.engine.worker` with `worker_argv`, in a new session (its own process group),
        stdout and stderr merged into `stdout`, stdin empty."""
        ...

    async def close(self) -> None: ...


class ColdSpawner:
    async def spawn(
        self, worker_argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> ReplicaProcess:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mwtui.engine.worker", *worker_argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,  # its own process group, killed as one
        )

    async def close(self) -> None:
        pass
