"""Port numbers: the stable own port of each endpoint, and who holds a busy port."""

from __future__ import annotations

import hashlib
import shlex

DEFAULT_GATEWAY_PORT = 8470  # no common dev server uses it (8000, 8080, 3000, 5000 are taken by habit)
OWN_PORT_BASE = 20000
OWN_PORT_SPAN = 10000


def loopback_host(host: str) -> str:
    """Where this machine reaches a server listening on `host`: a wildcard or `localhost` by loopback."""
    if host in ("0.0.0.0", "", "localhost"):
        return "127.0.0.1"
    return "::1" if host == "::" else host


def stable_port(app_file: str, endpoint: str) -> int:
    """The same app file and endpoint always ask for the same port, so bookmarks survive restarts."""
    digest = hashlib.sha256(f"{app_file}::{endpoint}".encode()).digest()
    return OWN_PORT_BASE + int.from_bytes(digest[:4], "big") % OWN_PORT_SPAN


def port_holder(port: int) -> str:
    """`pid 123 (python -m http.server 8000)` for whoever listens on `port`, or as much of it as this
    user may see. psutil is imported here, on this error path only: replicas start faster without it."""
    import psutil

    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        conns = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                cmd = shlex.join(psutil.Process(c.pid).cmdline())
            except psutil.Error:
                return f"pid {c.pid}"
            if len(cmd) > 200:
                cmd = cmd[:200] + "…"
            return f"pid {c.pid} ({cmd})"
    return "another process (not one this user can see)"
