"""The request inspector's memory: what went through the gateway, per endpoint, in a bounded ring.

An exchange carries a `Capture` while inspection is on (`--inspect-ring`, 0 or `--no-inspect`: off):
the request's and the response's headers as they came, the first KEEP bytes of each body (and for a
stream, its total size and chunk count), when it reached a replica, got a connection, and heard the
first byte back. Once the exchange is recorded its capture goes into its endpoint's ring, which keeps
the newest entries within a byte budget. Nothing is written to disk. Credentials are kept (for replay)
but never shown: `to_json` masks them.
"""

from __future__ import annotations

import json
import shlex
from collections import deque
from time import perf_counter
from typing import Any, Final

KEEP: Final = 64 * 1024  # bytes of each body kept
MAX_ENTRIES: Final = 1000  # per endpoint, whatever their size
ENTRY_OVERHEAD: Final = 1024  # bytes an entry costs beyond its headers and bodies (objects, dict slots)
HIDDEN: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"modal-secret"})
MASK: Final = "••••••"
CURL_PLACEHOLDERS: Final = {b"modal-key": "$MODAL_KEY", b"modal-secret": "$MODAL_SECRET"}


class Capture:
    __slots__ = (
        "id", "t_wall", "t0", "t_attach", "t_bind", "t_head", "method", "url", "host", "req_headers", "req_body",
        "req_size", "resp_headers", "resp_body", "resp_size", "chunks", "status", "endpoint", "replica",
        "generation", "woke", "error", "replay_of", "duration_ms", "size", "ws_in", "ws_out",
    )

    def __init__(self, method: bytes, url: bytes, host: bytes, headers: list[tuple[bytes, bytes]], t0: float,
                 t_wall: float) -> None:
        self.id = 0
        self.t_wall = t_wall  # time.time() of the request head
        self.t0 = t0
        self.t_attach = 0.0  # perf_counter() when a replica was chosen; 0: never
        self.t_bind = 0.0  # ... when a connection to it carried the request
        self.t_head = 0.0  # ... when the response head came
        self.method = method
        self.url = url
        self.host = host
        self.req_headers = headers
        self.req_body = b""
        self.req_size = 0
        self.resp_headers: list[tuple[bytes, bytes]] = []
        self.resp_body = b""
        self.resp_size = 0
        self.chunks = 0
        self.status = 0
        self.endpoint = ""
        self.replica = ""
        self.generation = 0
        self.woke = False  # it waited at a pool with no replica: it woke the pool
        self.error = ""  # the gateway's own answer (502, 503, 504): its cause
        self.replay_of = 0
        self.duration_ms = 0.0
        self.size = 0
        self.ws_in = 0  # WebSocket: bytes each way once tunnelled
        self.ws_out = 0

    def req_data(self, data: bytes) -> None:
        self.req_size += len(data)
        kept = len(self.req_body)
        if kept < KEEP:
            self.req_body += data[: KEEP - kept]

    def resp_data(self, data: bytes) -> None:
        self.resp_size += len(data)
        self.chunks += 1
        kept = len(self.resp_body)
        if kept < KEEP:
            self.resp_body += data[: KEEP - kept]

    def response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.t_head = perf_counter()
        self.status = status
        self.resp_headers = headers

    # ----- what a person (and the API) sees
    def timings(self) -> dict[str, float | None]:
        def ms(a: float, b: float) -> float | None:
            return round((b - a) * 1000, 3) if a and b else None

        return {
            "queue_ms": ms(self.t0, self.t_attach),
            "connect_ms": ms(self.t_attach, self.t_bind),
            "ttfb_ms": ms(self.t_bind, self.t_head),
            "duration_ms": round(self.duration_ms, 3),
        }

    def summary(self) -> dict[str, Any]:
        url = self.url.decode("latin-1")
        return {
            "id": self.id, "t": self.t_wall, "endpoint": self.endpoint, "method": self.method.decode("latin-1"),
            "path": url, "status": self.status, **self.timings(), "replica": self.replica or None,
            "generation": self.generation or None, "woke": self.woke, "error": self.error or None,
            "replay_of": self.replay_of or None,
        }

    def to_json(self, port: int) -> dict[str, Any]:
        out = self.summary()
        hidden = self.secrets()
        out.update(
            request_headers=_shown_headers(self.req_headers),
            request_body=_body(_masked(self.req_body, hidden), self.req_size, self.req_headers),
            response_headers=_shown_headers(self.resp_headers),
            response_body=_body(_masked(self.resp_body, hidden), self.resp_size, self.resp_headers, self.chunks),
            curl=self.curl(port),
        )
        if self.ws_in or self.ws_out:
            out["websocket"] = {"bytes_from_client": self.ws_in, "bytes_from_replica": self.ws_out}
        return out

    def secrets(self) -> list[bytes]:
        """The credentials this exchange carried (whole header values, and each cookie's value): an
        app that echoes one in a body shows it masked too."""
        out: list[bytes] = []
        for name, value in (*self.req_headers, *self.resp_headers):
            lname = name.lower()
            if lname not in HIDDEN:
                continue
            out.append(value.strip())
            if lname in (b"cookie", b"set-cookie"):
                for pair in value.split(b";"):
                    out.append(pair.partition(b"=")[2].strip())
        return sorted({v for v in out if len(v) >= 4}, key=len, reverse=True)

    def curl(self, port: int) -> str:
        """A command that sends this request again through the gateway (credentials as placeholders)."""
        parts = ["curl", "-X", self.method.decode("latin-1"), "-H", f"Host: {self.host.decode('latin-1')}"]
        for name, value in self.req_headers:
            lname = name.lower()
            if lname in (b"host", b"content-length", b"connection", b"transfer-encoding"):
                continue
            shown = CURL_PLACEHOLDERS.get(lname) or ("$" + lname.decode("latin-1").upper().replace("-", "_")
                                                     if lname in HIDDEN else value.decode("latin-1"))
            parts += ["-H", f"{name.decode('latin-1')}: {shown}"]
        if self.req_size:
            if len(self.req_body) < self.req_size:
                parts += ["--data-binary", f"@body-{self.id}.bin"]  # not all of it was kept
            else:
                try:
                    parts += ["--data-raw", self.req_body.decode("utf-8")]
                except UnicodeDecodeError:
                    parts += ["--data-binary", f"@body-{self.id}.bin"]
        parts.append(f"http://127.0.0.1:{port}{self.url.decode('latin-1')}")
        # Placeholders stay expandable: double-quoted; the rest single-quoted.
        return " ".join(f'"{p}"' if "$" in p and p.split(": ", 1)[-1].startswith("$") else shlex.quote(p) for p in parts)

    def replayable(self) -> bool:
        return len(self.req_body) == self.req_size

    def raw_request(self, new_id: int) -> bytes:
        """The request as it came (credentials included), for a replay through the gateway itself."""
        lines = [b"%b %b HTTP/1.1\r\n" % (self.method, self.url)]
        for name, value in self.req_headers:
            lname = name.lower()
            if lname in (b"content-length", b"transfer-encoding", b"connection", b"expect", REPLAY_HEADER):
                continue
            lines.append(b"%b: %b\r\n" % (name, value))
        lines.append(b"%b: %d:%d\r\n" % (REPLAY_HEADER, new_id, self.id))
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(self.req_body))
        return b"".join(lines) + self.req_body


REPLAY_HEADER: Final = b"x-mwtui-replay"  # `new:original` ids, set by the gateway's own replay (loopback only)


def _shown_headers(headers: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[n.decode("latin-1"), MASK if n.lower() in HIDDEN else v.decode("latin-1")] for n, v in headers]


def _masked(data: bytes, secrets: list[bytes]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, MASK.encode())
    return data


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").lower()
    return ""


def _body(data: bytes, size: int, headers: list[tuple[bytes, bytes]], chunks: int = 0) -> dict[str, Any]:
    """A body as the API shows it: text (JSON pretty-printed) or a hex head for binary, with its size."""
    out: dict[str, Any] = {"size": size, "kept": len(data), "truncated": len(data) < size}
    if chunks > 1:
        out["chunks"] = chunks
    if not data:
        out["text"] = ""
        return out
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        out["hex"] = data[:256].hex(" ")
        out["binary"] = True
        return out
    if "json" in _content_type(headers) and not out["truncated"]:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            out["json"] = True
        except ValueError:
            pass
    out["text"] = text
    return out


class Inspector:
    """The rings: per endpoint, the newest captures within `budget` bytes (and MAX_ENTRIES)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.rings: dict[str, deque[Capture]] = {}
        self.sizes: dict[str, int] = {}
        self.by_id: dict[int, Capture] = {}
        self.next_id = 1

    @property
    def on(self) -> bool:
        return self.budget > 0

    def new_id(self) -> int:
        n = self.next_id
        self.next_id = n + 1
        return n

    def keep(self, cap: Capture) -> None:
        if not cap.id:
            cap.id = self.new_id()
        size = cap.size = (len(cap.req_body) + len(cap.resp_body) + ENTRY_OVERHEAD
                           + sum(len(n) + len(v) for n, v in cap.req_headers)
                           + sum(len(n) + len(v) for n, v in cap.resp_headers))
        name = cap.endpoint
        ring = self.rings.get(name)
        if ring is None:
            ring = self.rings[name] = deque()
            self.sizes[name] = 0
        ring.append(cap)
        self.by_id[cap.id] = cap
        total = self.sizes[name] + size
        while ring and (total > self.budget or len(ring) > MAX_ENTRIES):
            old = ring.popleft()
            total -= old.size
            self.by_id.pop(old.id, None)
        self.sizes[name] = total

    def forget(self, endpoints: set[str]) -> None:
        """Drop the rings of endpoints no longer routed."""
        for name in [n for n in self.rings if n not in endpoints]:
            for cap in self.rings.pop(name):
                self.by_id.pop(cap.id, None)
            self.sizes.pop(name, None)

    def bytes_kept(self) -> int:
        return sum(self.sizes.values())

    def query(self, endpoint: str | None, status: str | None, limit: int) -> list[Capture]:
        """Newest first; `status` "500" exactly, or "5xx" a class."""
        rings = [self.rings.get(endpoint, deque())] if endpoint else list(self.rings.values())
        entries = sorted((c for ring in rings for c in ring), key=lambda c: c.id, reverse=True)
        if status:
            if len(status) == 3 and status.endswith("xx") and status[0].isdigit():
                low = int(status[0]) * 100
                entries = [c for c in entries if low <= c.status < low + 100]
            elif status.isdigit():
                entries = [c for c in entries if c.status == int(status)]
        return entries[:limit]
