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
# Per endpoint, whatever their size: more would keep the gateway's working set out of the CPU's caches
# (1000 cost 8-14% of raw-ASGI throughput, 256 within noise: bench/gateway.py).
MAX_ENTRIES: Final = 256
ENTRY_OVERHEAD: Final = 1024  # bytes an entry costs beyond its headers and bodies (objects, dict slots)
HEADER_GUESS: Final = 96  # bytes counted per response header (the request's head is measured)
HIDDEN: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"modal-secret"})
MASK: Final = "••••••"
CURL_PLACEHOLDERS: Final = {b"modal-key": "$MODAL_KEY", b"modal-secret": "$MODAL_SECRET"}


WS_FIRST: Final = 5  # WebSocket text messages kept each way
WS_TEXT: Final = 200  # characters of each


class WsTally:
    """One direction of a WebSocket, read frame by frame: how many messages, and the first text ones
    (inflated when the connection compresses them, permessage-deflate). It stops reading once frames no
    longer fit in KEEP bytes (counting bytes goes on elsewhere)."""

    __slots__ = ("buf", "messages", "first", "done", "inflate", "reading")

    def __init__(self) -> None:
        self.buf = b""
        self.messages = 0
        self.first: list[str] = []
        self.done = False
        self.inflate: Any = None  # zlib's decompressor, kept across messages (context takeover)
        self.reading = True  # still collecting the first text messages

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        b = self.buf + data
        while len(b) >= 2:
            n = b[1] & 0x7F
            off = 2
            if n == 126:
                if len(b) < 4:
                    break
                n, off = int.from_bytes(b[2:4], "big"), 4
            elif n == 127:
                if len(b) < 10:
                    break
                n, off = int.from_bytes(b[2:10], "big"), 10
            masked = b[1] & 0x80
            key = b[off:off + 4] if masked else b""
            off += 4 if masked else 0
            if len(b) < off + n:
                if off + n > KEEP:
                    self.done = True  # a frame too large to hold here: only bytes are counted from now
                    b = b""
                break
            opcode = b[0] & 0x0F
            if b[0] & 0x80 and opcode in (0, 1, 2):
                self.messages += 1
                if opcode in (1, 2) and self.reading:
                    self._message(opcode, bool(b[0] & 0x40), _unmasked(b[off:off + n], key) if masked else b[off:off + n])
            b = b[off + n:]
        self.buf = b

    def _message(self, opcode: int, compressed: bool, payload: bytes) -> None:
        if compressed:  # every compressed message goes through, in order: each may refer to the ones before
            import zlib

            if self.inflate is None:
                self.inflate = zlib.decompressobj(-15)
            try:
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff", KEEP)
            except zlib.error:
                self.reading = False
                self.first.append("(a compressed message mwtui could not read)")
                return
            if self.inflate.unconsumed_tail:  # over KEEP inflated: the ones after it cannot be read
                self.reading = False
        if opcode == 1:
            self.first.append(payload[: WS_TEXT * 4].decode("utf-8", "replace")[:WS_TEXT])
            self.reading = self.reading and len(self.first) < WS_FIRST


class Capture:
    """What the inspector keeps of one exchange. For speed it holds what the gateway made anyway: the
    request head as forwarded to the replica (`Exchange.head`) and, for a response that came whole in
    one read (most do), the replica's bytes as they came; headers are parsed out only when shown."""

    __slots__ = (
        "id", "t_wall", "t0", "t_attach", "t_bind", "t_head", "method", "url", "host", "req_head", "secret",
        "req_body", "req_size", "resp_raw", "resp_headers", "resp_body", "resp_size", "chunks", "status",
        "endpoint", "replica", "generation", "woke", "error", "replay_of", "duration_ms", "size", "ws_in",
        "ws_out", "ws_from_client", "ws_from_replica", "queued",
    )

    def __init__(self, method: bytes, url: bytes, host: bytes, t0: float, t_wall: float) -> None:
        self.id = 0
        self.t_wall = t_wall  # time.time() of the request head
        self.t0 = t0
        self.t_attach = 0.0  # perf_counter() when a replica was chosen; 0: never
        self.t_bind = 0.0  # ... when a connection to it carried the request
        self.t_head = 0.0  # ... when the response head came
        self.method = method
        self.url = url
        self.host = host
        self.req_head = b""  # request line and headers as forwarded (set when the exchange is recorded)
        self.secret: bytes | None = None  # the Modal-Secret it came with (never forwarded): for replay only
        self.req_body = b""
        self.req_size = 0
        self.resp_raw = b""  # a response that came in one read: head and body, as the replica sent them
        self.resp_headers: list[tuple[bytes, bytes]] = []  # otherwise its parsed headers...
        self.resp_body = b""  # ...and the first KEEP bytes of its body
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
        self.size = 0  # the bytes it counts for in its ring, once kept (Inspector.keep)
        self.ws_in = 0  # WebSocket: bytes each way once tunnelled
        self.ws_out = 0
        self.ws_from_client: WsTally | None = None
        self.ws_from_replica: WsTally | None = None
        self.queued = False  # it waited in the gateway's queue for a replica

    def ws_data(self, from_client: bool, data: bytes) -> None:
        """Tunnelled bytes (a WebSocket once upgraded): counted, and read for messages."""
        if from_client:
            self.ws_in += len(data)
            tally = self.ws_from_client
            if tally is None:
                tally = self.ws_from_client = WsTally()
        else:
            self.ws_out += len(data)
            tally = self.ws_from_replica
            if tally is None:
                tally = self.ws_from_replica = WsTally()
        tally.feed(data)

    def req_data(self, data: bytes) -> None:
        self.req_size += len(data)
        kept = len(self.req_body)
        if kept < KEEP:
            self.req_body += data[: KEEP - kept]

    def resp_data(self, data: bytes) -> None:
        n = len(data)
        self.resp_size += n
        self.chunks += 1
        kept = len(self.resp_body)
        if not kept and n <= KEEP:
            self.resp_body = data  # the common case, one small body: kept as it is, no copy
        elif kept < KEEP:
            self.resp_body += data[: KEEP - kept]

    def response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.t_head = perf_counter()
        self.status = status
        self.resp_headers = headers

    def whole_response(self, status: int, raw: bytes, head_end: int) -> None:
        """The response came in one read and went out as it came: keep those bytes, parse nothing."""
        self.t_head = perf_counter()
        self.status = status
        self.resp_raw = raw
        self.resp_size = len(raw) - head_end
        self.chunks = 1

    # ----- what a person (and the API) sees
    def request_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as forwarded, less what the gateway added (X-Forwarded-*, its dispatch header),
        and the Modal-Secret it took off."""
        out = [(n, v) for n, v in _parse_head(self.req_head) if n.lower() not in ADDED]
        if self.secret is not None:
            out.append((b"modal-secret", self.secret))
        return out

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        return _parse_head(self.resp_raw) if self.resp_raw else self.resp_headers

    def response_body(self) -> bytes:
        if self.resp_raw:
            return self.resp_raw[self.resp_raw.find(b"\r\n\r\n") + 4:][:KEEP]
        return self.resp_body

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
        req_headers, resp_headers = self.request_headers(), self.response_headers()
        hidden = secrets_of([*req_headers, *resp_headers])
        body = self.response_body()
        out.update(
            request_headers=_shown_headers(req_headers),
            request_body=_body(_masked(self.req_body, hidden), self.req_size, req_headers),
            response_headers=_shown_headers(resp_headers),
            response_body=_body(_masked(body, hidden), self.resp_size, resp_headers, self.chunks),
            curl=self.curl(port, req_headers),
        )
        if self.ws_in or self.ws_out:
            ws: dict[str, Any] = {"bytes_from_client": self.ws_in, "bytes_from_replica": self.ws_out}
            for side, tally in (("client", self.ws_from_client), ("replica", self.ws_from_replica)):
                ws[f"messages_from_{side}"] = tally.messages if tally else 0
                ws[f"first_from_{side}"] = [_masked(t.encode(), hidden).decode() for t in tally.first] if tally else []
            out["websocket"] = ws
        return out

    def curl(self, port: int, headers: list[tuple[bytes, bytes]]) -> str:
        """A command that sends this request again through the gateway (credentials as placeholders)."""
        parts = ["curl", "-X", self.method.decode("latin-1"), "-H", f"Host: {self.host.decode('latin-1')}"]
        for name, value in headers:
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
        for name, value in self.request_headers():
            lname = name.lower()
            if lname in (b"content-length", b"transfer-encoding", b"connection", b"expect", REPLAY_HEADER):
                continue
            lines.append(b"%b: %b\r\n" % (name, value))
        lines.append(b"%b: %d:%d\r\n" % (REPLAY_HEADER, new_id, self.id))
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(self.req_body))
        return b"".join(lines) + self.req_body


REPLAY_HEADER: Final = b"x-mwtui-replay"  # `new:original` ids, set by the gateway's own replay (loopback only)


# Headers the gateway adds on the way to the replica: not the client's, so not shown or replayed.
ADDED: Final = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-mwtui-endpoint"})


def _parse_head(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header lines of an HTTP head (the first line, request or status, skipped)."""
    out: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip(), value.strip()))
    return out


def secrets_of(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The credentials among `headers` (whole values, and each cookie's value): an app that echoes
    one in a body shows it masked too."""
    out: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname not in HIDDEN:
            continue
        out.append(value.strip())
        if lname in (b"cookie", b"set-cookie"):
            for pair in value.split(b";"):
                out.append(pair.partition(b"=")[2].strip())
    return sorted({v for v in out if len(v) >= 4}, key=len, reverse=True)


def _shown_headers(headers: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[n.decode("latin-1"), MASK if n.lower() in HIDDEN else v.decode("latin-1")] for n, v in headers]


def _unmasked(payload: bytes, key: bytes) -> bytes:
    """A client frame's payload, its 4-byte mask undone (XOR of whole integers: fast in Python)."""
    n = len(payload)
    if not n:
        return payload
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


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


class Ring:
    """One endpoint's captures, oldest first, and the bytes they count for."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: deque[Capture] = deque()
        self.size = 0


class Inspector:
    """The rings: per endpoint, the newest captures within `budget` bytes (and MAX_ENTRIES). Each routed
    endpoint holds its ring (`Endpoint.ring`, set with every routes table), so keeping a capture looks
    nothing up."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.rings: dict[str, Ring] = {}
        self.next_id = 1
        self.replaying: set[int] = set()  # ids handed to replays on their way: only those are taken

    @property
    def on(self) -> bool:
        return self.budget > 0

    def new_id(self) -> int:
        n = self.next_id
        self.next_id = n + 1
        return n

    def ring(self, endpoint: str) -> Ring:
        ring = self.rings.get(endpoint)
        if ring is None:
            ring = self.rings[endpoint] = Ring()
        return ring

    def keep(self, cap: Capture, ring: Ring) -> None:
        """Into its endpoint's ring, the oldest out while the ring is over its budget. Runs for every
        request: its size counts a header's worth per parsed response header, instead of measuring each."""
        if not cap.id:
            cap.id = self.new_id()
        size = cap.size = (len(cap.req_body) + len(cap.resp_body) + len(cap.resp_raw) + len(cap.req_head)
                           + ENTRY_OVERHEAD + HEADER_GUESS * len(cap.resp_headers))
        entries = ring.entries
        entries.append(cap)
        total = ring.size + size
        budget = self.budget
        if total > budget or len(entries) > MAX_ENTRIES:
            while entries and (total > budget or len(entries) > MAX_ENTRIES):
                total -= entries.popleft().size
        ring.size = total

    def find(self, request_id: int) -> Capture | None:
        """A kept request by its id (for the API: a scan, so that keeping one costs no index)."""
        for ring in self.rings.values():
            entries = ring.entries
            if entries and entries[0].id <= request_id <= entries[-1].id:
                for cap in entries:
                    if cap.id == request_id:
                        return cap
        return None

    def forget(self, endpoints: set[str]) -> None:
        """Drop the rings of endpoints no longer routed."""
        for name in [n for n in self.rings if n not in endpoints]:
            del self.rings[name]

    def query(self, endpoint: str | None, status: str | None, limit: int) -> list[Capture]:
        """Newest first; `status` "500" exactly, or "5xx" a class."""
        rings = [self.rings[endpoint]] if endpoint and endpoint in self.rings else [] if endpoint else list(self.rings.values())
        entries = sorted((c for ring in rings for c in ring.entries), key=lambda c: c.id, reverse=True)
        if status:
            if len(status) == 3 and status.endswith("xx") and status[0].isdigit():
                low = int(status[0]) * 100
                entries = [c for c in entries if low <= c.status < low + 100]
            elif status.isdigit():
                entries = [c for c in entries if c.status == int(status)]
        return entries[:limit]
