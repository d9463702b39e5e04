"""The one place the user's app file is imported by mwtui itself: an isolated child process.

User code may crash, hang, print or leak processes, so it only ever runs in a child: `python -m
mwtui.engine.import_child --fd N --job JOB <ref>`, in the app's folder, in a process group of its own that
is killed as a whole on timeout (and afterwards, in case the import left processes behind). The child
runs JOB (discovery's manifest, or the export's description of the pools) and writes its JSON on a
dedicated pipe (fd N), so whatever the user's code prints cannot corrupt it. It watches mwtui's lifeline
(when given one) and dies with it.

Given the engine's spawner, when that is a `ZygoteSpawner`, the child is forked from the zygote instead
(the zygote has imported mwtui, never the user's code; the child imports the file afresh): the same argv,
fds, session, timeout and group kill, without a fresh interpreter's startup on every save. When the
zygote cannot fork it, the child starts cold as above.

On timeout the child is asked for its stack (faulthandler on SIGUSR1), so that the caller can say which
line of the user's code never returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import importlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .lifeline import ENV_FD as LIFELINE_ENV
from .loader import AppRef

if TYPE_CHECKING:
    from .spawner import Spawner

TAIL_BYTES = 16 * 1024  # how much of the child's stdout/stderr we keep for messages
DUMP_GRACE_S = 1.0  # after a timeout, how long the child gets to print where it is stuck
REAP_TIMEOUT_S = 5.0  # after the group is killed, how long its pipes may take to close
# What a child may run: job -> "module:function", the function taking the AppRef and returning JSON text
# (it reports the app's own failures in that JSON; an exception out of it is a bug of ours).
JOBS = {
    "manifest": "mwtui.engine.discovery:manifest_json",
    "introspect": "mwtui.engine.export.introspect:info_json",
}


@dataclass(frozen=True)
class ChildResult:
    payload: bytes  # what the job wrote (empty if it wrote nothing: it crashed, or timed out)
    timed_out: bool
    code: int | None  # the child's exit status (negative: killed by that signal)
    output: str  # the tail of its stderr, else its stdout: for a crash's message
    stack: str = ""  # on timeout: the stack dump it printed when asked (SIGUSR1)


# ---------------------------------------------------------------- parent side


class _Child(Protocol):
    """What we use of the child: asyncio.subprocess.Process, or spawner.ZygoteChild."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    @property
    def stderr(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def run_blocking(ref: AppRef, job: str, timeout: float, *, env: Mapping[str, str] | None = None,
                 pass_fds: Sequence[int] = (), stack_until: Any = None) -> ChildResult:
    """Blocking form of `run` (always a cold child: a spawner lives on one event loop)."""
    coro_args = (ref, job, timeout)
    kwargs: dict[str, Any] = {"env": env, "pass_fds": pass_fds, "stack_until": stack_until}
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run(*coro_args, **kwargs))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run(*coro_args, **kwargs)).result()


async def run(
    ref: AppRef,
    job: str,
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    spawner: Spawner | None = None,
    stack_until: Any = None,
) -> ChildResult:
    """Run `job` on `ref` in a child and return what it wrote; never raises for a bad app file.

    `env` replaces the child's environment (default: ours); `pass_fds` are extra fds it inherits, e.g.
    mwtui's lifeline. `stack_until(text) -> bool`: on timeout, read the child's stack dump until it says
    yes (it has found what it looks for) or DUMP_GRACE_S passes."""
    child_env = dict(os.environ if env is None else env)
    if child_env.get(LIFELINE_ENV, "").isdigit() and int(child_env[LIFELINE_ENV]) not in pass_fds:
        # A lifeline number without the fd itself would point at some other open file (or none).
        del child_env[LIFELINE_ENV]
    read_fd, write_fd = os.pipe()
    try:
        proc = await _start(ref, job, child_env, write_fd, tuple(pass_fds), spawner)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    assert proc.stdout is not None and proc.stderr is not None
    # A file object now, closed below whatever happens: cancelled before _read_all ran, the fd would leak.
    result = os.fdopen(read_fd, "rb", buffering=0)
    out, err = _Tail(), _Tail()
    drains = [asyncio.create_task(out.drain(proc.stdout)), asyncio.create_task(err.drain(proc.stderr))]
    payload, timed_out, stack = b"", False, ""
    try:
        # The child closes the pipe by exiting: EOF means "done" (or crashed), whatever it left running.
        payload = await asyncio.wait_for(_read_all(result), timeout)
    except asyncio.TimeoutError:
        timed_out = True
        stack = await _stack(proc, err, stack_until)
    finally:
        # Cancelled (a newer save supersedes this import) or done: anything the import started must not
        # outlive it (and may hold our stdout open).
        result.close()
        _kill_group(proc.pid)
        code = await _reap(proc)
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        close_pipes = getattr(proc, "close_pipes", None)  # a forked child's pipes are ours to close
        if close_pipes is not None:
            close_pipes()
    return ChildResult(payload, timed_out, code, err.text() or out.text(), stack)


async def _start(
    ref: AppRef, job: str, env: dict[str, str], write_fd: int, pass_fds: tuple[int, ...], spawner: Spawner | None
) -> _Child:
    argv = ["--fd", str(write_fd), "--job", job, str(ref)]
    fork = getattr(spawner, "fork_discovery", None)
    if fork is not None:
        forked: _Child | None = await fork(argv, env, ref.cwd, (write_fd, *pass_fds))
        if forked is not None:
            return forked
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mwtui.engine.import_child", *argv,
        cwd=ref.cwd,
        env=env,
        pass_fds=(write_fd, *pass_fds),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def _reap(proc: _Child) -> int | None:
    """Wait for the child; asyncio also waits for its pipes, which a process that escaped the group could
    hold open, so give up after a moment and close them ourselves."""
    try:
        return await asyncio.wait_for(proc.wait(), REAP_TIMEOUT_S)
    except asyncio.TimeoutError:
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
        return proc.returncode


class _Tail:
    """The last TAIL_BYTES of a stream, read to its end so the child never blocks on a full pipe."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.total = 0  # bytes seen so far, kept or not

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.data += chunk
            self.total += len(chunk)
            del self.data[:-TAIL_BYTES]

    def text(self, since: int = 0) -> str:
        """What was kept, or only what arrived after `total` was `since`."""
        fresh = min(self.total - since, len(self.data))
        return bytes(self.data[len(self.data) - fresh:]).decode(errors="replace")


async def _read_all(pipe: Any) -> bytes:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await reader.read()
    finally:
        transport.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _stack(proc: _Child, err: _Tail, enough: Any) -> str:
    """Ask the hung child for its stack (faulthandler on SIGUSR1); what it printed since."""
    mark = err.total  # only the dump counts, not anything the user's code printed before
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGUSR1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DUMP_GRACE_S
    while loop.time() < deadline:
        if enough is not None and enough(err.text(since=mark)):
            break
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    return err.text(since=mark)


# ---------------------------------------------------------------- child side


def child_main(argv: Sequence[str]) -> int:
    """`python -m mwtui.engine.import_child --fd N --job JOB <ref>`: run JOB, write its JSON to fd N."""
    from .lifeline import watch_parent

    if len(argv) != 5 or argv[0] != "--fd" or argv[2] != "--job" or argv[3] not in JOBS:
        print(f"usage: python -m mwtui.engine.import_child --fd N --job {{{','.join(JOBS)}}} path/to/app.py[::var]",
              file=sys.stderr)
        return 2
    fd, job, ref = int(argv[1]), argv[3], AppRef.parse(argv[4])
    watch_parent()
    # On timeout the parent sends SIGUSR1 to learn where the import is stuck.
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    module, _, function = JOBS[job].partition(":")
    text = getattr(importlib.import_module(module), function)(ref)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return 0


def exit_after(argv: Sequence[str]) -> None:
    """Run `child_main` and leave at once: user code may have started non-daemon threads."""
    status = child_main(argv)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_after(sys.argv[1:])
