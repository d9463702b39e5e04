"""The replica's listening socket (unix, or TCP with `--listen`), and how long connections live on it
(uvicorn and gunicorn alike)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass

GRACEFUL_SECONDS = 10  # in-flight requests get this long to finish on stop
KEEPALIVE_SECONDS = 75  # longer than the gateway keeps idle pooled connections, so it closes first


def bind_unix(path: str) -> socket.socket:
    """Bind (replacing a stale socket file) and listen, so that the caller gets any error itself
    rather than uvicorn's or gunicorn's exit."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)  # only this user's gateway may connect
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Listen:
    """Where a replica listens: `unix` (the default: DIR/ID.sock, reached only through the gateway) or
    `tcp:HOST:PORT` (on its own, as in a Knative container, where `$PORT` is the one port)."""

    kind: str  # "unix" or "tcp"
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Listen:
        if text == "unix":
            return cls("unix")
        scheme, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if scheme != "tcp" or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--listen takes `unix` or `tcp:HOST:PORT` (e.g. tcp:0.0.0.0:8080), not {text!r}")
        return cls("tcp", host.strip("[]"), int(port))

    @property
    def tcp(self) -> bool:
        return self.kind == "tcp"

    def __str__(self) -> str:
        return f"tcp:{self.host}:{self.port}" if self.tcp else "unix"


def bind_tcp(host: str, port: int) -> socket.socket:
    """Bind and listen on HOST:PORT (IPv6 when HOST has a colon), with SO_REUSEADDR so that a restarted
    container or test can take the port back at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock
