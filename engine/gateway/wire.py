"""HTTP/1.1 bytes the gateway writes itself: its own responses and the header sets it filters."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

TEXT: Final = b"text/plain; charset=utf-8"
HTML: Final = b"text/html; charset=utf-8"
JSON: Final = b"application/json"
PROMETHEUS: Final = b"text/plain; version=0.0.4; charset=utf-8"

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK_END: Final = b"0\r\n\r\n"
CRLF: Final = b"\r\n"

# Request headers never copied to the upstream as they came: hop-by-hop ones (RFC 9110 §7.6.1),
# the ones we answer or rewrite ourselves, and the dispatch header a client must not be able to forge.
REQUEST_SPECIAL: Final = frozenset({
    b"host", b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
    b"x-mwtui-endpoint", b"content-length", b"modal-key", b"modal-secret", b"x-mwtui-replay",
})
# Headers a client's Connection may not name: they frame or route the request, and the gateway sets
# them itself (see ClientConn._drop_connection_tokens).
CONNECTION_NEVER: Final = frozenset({b"host", b"content-length", b"transfer-encoding"})
# Response headers dropped on the way back: framing is ours to decide on the client connection.
RESPONSE_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})

_status_lines: dict[tuple[int, bytes], bytes] = {}


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def status_line(status: int, phrase: bytes) -> bytes:
    """`HTTP/1.1 200 OK\\r\\n`, cached: a handful of (status, phrase) pairs cover almost all traffic."""
    key = (status, phrase)
    line = _status_lines.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase or reason(status))
        if len(_status_lines) < 512:
            _status_lines[key] = line
    return line


def response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = TEXT,
    extra: bytes = b"",
    close: bool = False,
    keep_alive_10: bool = False,
    head: bool = False,
) -> bytes:
    """A whole response of the gateway's own: status line, headers, and body (none for HEAD)."""
    conn = b"connection: close\r\n" if close else (b"connection: keep-alive\r\n" if keep_alive_10 else b"")
    return b"".join((
        status_line(status, reason(status)),
        b"content-type: ", content_type, CRLF,
        b"content-length: %d\r\n" % len(body),
        b"cache-control: no-store\r\n",
        extra, conn, CRLF,
        b"" if head else body,
    ))


BAD_REQUEST: Final = response(400, b"mwtui: malformed HTTP request\n", close=True)
