"""What a replica tells the supervisor, and how a startup error reads for a person.

Messages are one JSON object per line on the pipe named by MWTUI_READY_FD (stderr when run by hand),
each the wire form of one of the records below (`Starting`, `Ready`, `Failed`, `Retire`, `Beat`): the
replica writes them with `Reporter`, the supervisor reads them back with `decode`.

    {"event": "starting", "doing": ..., "startup_timeout": ...}   as each startup step begins
    {"event": "ready", "pid": ..., "startup_ms": ..., "upstreams": {name: {"address", "dispatch"}}}
    {"event": "failed", "stage": ..., "endpoint": ..., "message": ..., "traceback": ...}
    {"event": "retire", "reason": ...}   a request's work could not be stopped at its timeout
    {"event": "beat"}   every HEARTBEAT_S from the replica's event loop once ready: it is not blocked

After "failed" the replica exits with FAILED_EXIT_CODE, after "retire" with RETIRED_EXIT_CODE. "starting"
says what the replica is doing (for a person: "running @modal.enter method `load`") and, once the app
is imported, the function's `startup_timeout`, which the supervisor enforces (the first one starts its
clock). Only a reader that asks for them (MWTUI_REPORT_STARTING=1) gets "starting" messages: for any
other, the first message is still "ready" or "failed".
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

READY_FD_ENV = "MWTUI_READY_FD"
HEARTBEAT_S = 1.0  # from the event loop: a loop blocked (time.sleep in an async def) stops it
STARTING_ENV = "MWTUI_REPORT_STARTING"
FAILED_EXIT_CODE = 3
RETIRED_EXIT_CODE = 4

Stage = Literal["import", "enter", "build", "lifespan", "web_server", "serve"]

_MAX_TRACEBACK = 32_000  # keep a message well inside a pipe's buffer, whoever reads it and when
_MAX_SUMMARY = 500

# Import names whose package on PyPI has another name; the common cases only.
_PIP_NAMES = {
    "PIL": "pillow", "cv2": "opencv-python", "sklearn": "scikit-learn", "skimage": "scikit-image",
    "yaml": "pyyaml", "bs4": "beautifulsoup4", "dotenv": "python-dotenv", "jwt": "pyjwt",
    "dateutil": "python-dateutil", "multipart": "python-multipart", "docx": "python-docx",
    "fitz": "pymupdf", "Crypto": "pycryptodome", "serial": "pyserial", "zmq": "pyzmq",
    "OpenSSL": "pyopenssl", "git": "gitpython", "attr": "attrs", "magic": "python-magic",
    "google": "protobuf",
}


class StartupFailure(Exception):
    """The replica cannot serve; carries the "failed" message."""

    def __init__(self, stage: Stage, endpoint: str | None, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.endpoint = endpoint
        self.message = message
        self.traceback = traceback_text[-_MAX_TRACEBACK:]

    def report(self) -> Failed:
        return Failed(self.stage, self.endpoint, self.message, self.traceback)


@dataclass(frozen=True)
class Upstream:
    """Where the gateway sends one endpoint's requests."""

    address: str  # "unix:/dir/hello.0.sock" or "tcp:127.0.0.1:8000"
    dispatch: str | None = None  # value of the x-mwtui-endpoint header, when one socket serves several

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "dispatch": self.dispatch}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Upstream:
        """As the supervisor reads it back from the "ready" message."""
        return cls(str(d["address"]), d.get("dispatch"))


# --- the records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Starting:
    """A startup step begins; once the app is imported it also carries the function's startup_timeout."""

    doing: str
    startup_timeout: float | None = None


@dataclass(frozen=True)
class Ready:
    pid: int
    startup_ms: float | None
    upstreams: dict[str, Upstream]


@dataclass(frozen=True)
class Failed:
    """Why the replica cannot serve; it exits with FAILED_EXIT_CODE next."""

    stage: str
    endpoint: str | None
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Retire:
    """A request's work could not be stopped at its timeout; it exits with RETIRED_EXIT_CODE next."""

    reason: str


@dataclass(frozen=True)
class Beat:
    """Its event loop ran: it is not blocked."""


Report = Starting | Ready | Failed | Retire | Beat


def encode(report: Report) -> str:
    """The one JSON line for `report`."""
    body: dict[str, Any]
    match report:
        case Starting(doing, timeout):
            body = {"event": "starting", "doing": doing}
            if timeout is not None:
                body["startup_timeout"] = timeout
        case Ready(pid, startup_ms, upstreams):
            body = {"event": "ready", "pid": pid, "startup_ms": startup_ms,
                    "upstreams": {name: u.to_json() for name, u in upstreams.items()}}
        case Failed(stage, endpoint, message, tb):
            body = {"event": "failed", "stage": stage, "endpoint": endpoint, "message": message, "traceback": tb}
        case Retire(reason):
            body = {"event": "retire", "reason": reason}
        case Beat():
            body = {"event": "beat"}
    return json.dumps(body) + "\n"


def decode(line: bytes | str) -> Report | None:
    """The record on one line, or None for anything else (a stray print, a partial line)."""
    try:
        msg = json.loads(line)
        event = msg.get("event")
        if event == "starting":
            timeout = msg.get("startup_timeout")
            return Starting(str(msg.get("doing") or ""),
                            float(timeout) if isinstance(timeout, (int, float)) else None)
        if event == "ready":
            ups = {str(name): Upstream.from_json(u) for name, u in msg["upstreams"].items()}
            ms = msg.get("startup_ms")
            return Ready(int(msg.get("pid") or 0), float(ms) if isinstance(ms, (int, float)) else None, ups)
        if event == "failed":
            return Failed(str(msg.get("stage") or ""), msg.get("endpoint"), str(msg.get("message") or ""),
                          str(msg.get("traceback") or ""))
        if event == "retire":
            return Retire(str(msg.get("reason") or ""))
        if event == "beat":
            return Beat()
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


class Reporter:
    def __init__(self, fd: int | None, started: float, report_starting: bool = False) -> None:
        self.fd = fd
        self.started = started  # time.monotonic() when the replica's code began
        self.report_starting = report_starting and fd is not None

    @classmethod
    def from_env(cls, started: float) -> Reporter:
        # Popped, and the fd made non-inheritable, so that processes the user's code starts (a
        # web_server's server) neither see a stale number nor hold the pipe open after we die.
        raw = os.environ.pop(READY_FD_ENV, None)
        fd: int | None = None
        if raw:
            try:
                fd = int(raw)
                os.set_inheritable(fd, False)
            except (ValueError, OSError):
                fd = None
        return cls(fd, started, os.environ.pop(STARTING_ENV, "") == "1")

    def ready(self, upstreams: dict[str, Upstream], pid: int | None = None) -> None:
        startup_ms = round((time.monotonic() - self.started) * 1000, 1)
        self._send(Ready(pid if pid is not None else os.getpid(), startup_ms, upstreams))

    def starting(self, doing: str, startup_timeout: float | None = None) -> None:
        if self.report_starting:
            self._send(Starting(doing, startup_timeout))

    def failed(self, failure: StartupFailure) -> None:
        self._send(failure.report())

    def beat(self) -> None:
        self._send(Beat())

    def retire(self, reason: str) -> None:
        self._send(Retire(reason))

    def _send(self, report: Report) -> None:
        line = encode(report)
        if self.fd is not None:
            data = memoryview(line.encode())
            try:
                while data:
                    data = data[os.write(self.fd, data):]
                return
            except OSError:
                pass  # the supervisor is gone or the fd is bad: say it where a person may see it
        sys.stderr.write(line)
        sys.stderr.flush()


# --- how errors read ---------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def user_location(exc: BaseException, app_file: str) -> str | None:
    """`app.py:12`: the deepest frame in the user's app file (else in another file of its folder,
    outside installed packages), looking through chained exceptions too."""
    app_file = os.path.realpath(app_file)
    folder = os.path.dirname(app_file)

    def rel(path: str, line: int | None) -> str:
        return f"{os.path.relpath(path, folder)}:{line}"

    for e in _chain(exc):
        if isinstance(e, SyntaxError) and e.filename and os.path.exists(e.filename):
            path = os.path.realpath(e.filename)
            if path.startswith(folder + os.sep):
                return rel(path, e.lineno)
        frames = [(os.path.realpath(f.filename), f.lineno) for f in traceback.extract_tb(e.__traceback__)]
        for path, line in reversed(frames):
            if path == app_file:
                return rel(path, line)
        for path, line in reversed(frames):
            if path.startswith(folder + os.sep) and "site-packages" not in path:
                return rel(path, line)
    return None


def summary(exc: BaseException) -> str:
    """`ValueError: boom`, on one line."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_SUMMARY:
        text = text[:_MAX_SUMMARY] + "…"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def missing_package(exc: BaseException) -> str | None:
    """The top-level module a ModuleNotFoundError (or what caused it) is about, if it is not installed."""
    for e in _chain(exc):
        if isinstance(e, ModuleNotFoundError) and e.name:
            top = e.name.partition(".")[0]
            try:
                if importlib.util.find_spec(top) is None:
                    return top
            except (ImportError, ValueError):
                return top
            return None
    return None


def pip_name(module: str) -> str:
    return _PIP_NAMES.get(module, module)


def describe(subject: str, lead: str, exc: BaseException, app_file: str) -> str:
    """One paragraph: who, what went wrong, and where in the user's file. `lead` says what raised:
    "the @modal.asgi_app factory raised", "ASGI lifespan startup failed:"."""
    where = user_location(exc, app_file)
    package = missing_package(exc)
    if package is not None:
        cause = next(e for e in _chain(exc) if isinstance(e, ModuleNotFoundError))
        text = f"{subject} needs package `{package}`, which is not installed ({cause}): pip install {pip_name(package)}"
        return f"{text} — imported at {where}" if where else text
    text = f"{subject}: {lead} {summary(exc)}"
    return f"{text} (at {where})" if where else text


def failure(
    stage: Stage, endpoint: str | None, subject: str, lead: str, exc: BaseException, app_file: str
) -> StartupFailure:
    return StartupFailure(stage, endpoint, describe(subject, lead, exc, app_file), format_traceback(exc))
