"""Port numbers: the stable own port of each endpoint, and who holds a busy port."""

from __future__ import annotations

import contextlib
import hashlib

import psutil

DEFAULT_GATEWAY_PORT = 8470  # no common dev server uses it (8000, 8080, 3000, 5000 are taken by habit)
OWN_PORT_BASE = 20000
OWN_PORT_SPAN = 10000


def stable_port(app_file: str, endpoint: str) -> int:
    """The same app file and endpoint always ask for the same port, so bookmarks survive restarts."""
    digest = hashlib.sha256(f"{app_file}::{endpoint}".encode()).digest()
    return OWN_PORT_BASE + int.from_bytes(digest[:4], "big") % OWN_PORT_SPAN


def port_holder(port: int) -> str | None:
    """'pid 123 (python3 -m http.server)' for the process listening on `port`, if we may know."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    cmd = " ".join(psutil.Process(conn.pid).cmdline()) or psutil.Process(conn.pid).name()
                except psutil.Error:
                    cmd = "?"
                return f"pid {conn.pid} ({cmd})"
    return None
