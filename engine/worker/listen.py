"""The replica's listening unix socket, and how long connections live on it (uvicorn and gunicorn alike)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

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
