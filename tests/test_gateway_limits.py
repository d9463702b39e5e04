"""The gateway under bad input and load, over raw sockets: every limit answers with a clear status,
nothing crashes, slow clients delay nobody, 1000 clients at once each get their answer.

The gateways here run with small limits (`--max-body 1000 --header-timeout 1 ...`) so that each limit
is reached quickly. After every bad exchange the same gateway must still serve a good request.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .eventually import eventually
from .fixtures.gateway_harness import (
    TIMEOUT,
    Gateway,
    Upstream,
    final_status,
    raw_exchange,
    running_gateway,
)
from .fixtures.gateway_harness import unix_upstream as unix_upstream_at

pytestmark = pytest.mark.timeout(90)

HOST = b"demo-hello.localhost"
GOOD = b"GET /echo/good HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with unix_upstream_at(tmp_path_factory.mktemp("up") / "replica.sock") as u:
        yield u


@pytest.fixture(scope="module")
def gw(replica: Upstream) -> Iterator[Gateway]:
    with running_gateway("--max-body", "1000", "--header-timeout", "1", "--keepalive-timeout", "1", upstreams=[replica]) as g:
        yield g


def still_serving(g: Gateway) -> None:
    got = raw_exchange(g.port, GOOD)
    assert final_status(got) == 200 and b'"/echo/good"' in got, got[:300]


def closes_after_answer(g: Gateway, data: bytes) -> bytes:
    """Send `data`; the gateway must answer and close (read until EOF)."""
    got = raw_exchange(g.port, data)
    assert b"connection: close" in got.lower(), got[:300]
    return got


# ----------------------------------------------------------------------------- malformed and ambiguous
@pytest.mark.parametrize("data", [
    b"GARBAGE \x00\x01 nonsense\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : demo-hello.localhost\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\nHost: demo-hello.localhost\r\nX-Bad: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: demo-hello.localhost\r\nX-Fold: a\r\n folded\r\n\r\n",  # obsolete folding
    b"GET / HTTP/1.1\nHost: demo-hello.localhost\n\n",  # bare LF
    b"GET /a b HTTP/1.1\r\nHost: demo-hello.localhost\r\n\r\n",
    b"GET / FOO/1.1\r\nHost: demo-hello.localhost\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET / HTTP/1.1\r\nHost: demo-hello.localhost\r\nHost: localhost\r\n\r\n",  # two Hosts
], ids=["garbage", "space-colon", "ctl-in-value", "obs-fold", "bare-lf", "space-in-target", "not-http",
        "no-host", "two-hosts"])
def test_malformed_is_400_and_closes(gw: Gateway, data: bytes) -> None:
    got = closes_after_answer(gw, data)
    assert final_status(got) == 400, got[:300]
    still_serving(gw)


@pytest.mark.parametrize("length", [b"-1", b"abc", b"+5", b"1 2", b"0x10", b"99999999999999999999999"])
def test_bad_content_length_is_400(gw: Gateway, length: bytes) -> None:
    got = closes_after_answer(gw, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: " + length
                              + b"\r\n\r\nhello")
    assert final_status(got) == 400, got[:300]
    still_serving(gw)


@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Transfer-Encoding: gzip\r\n",  # a request body must end in chunked, or its length is unknowable
    b"Transfer-Encoding: chunked, gzip\r\n",
], ids=["cl-te", "te-cl", "two-cl", "te-not-chunked", "chunked-not-last"])
def test_smuggling_shapes_are_400(gw: Gateway, headers: bytes) -> None:
    got = closes_after_answer(gw, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\n" + headers
                              + b"\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n")
    assert final_status(got) == 400 and b"smuggled" not in got, got[:300]
    still_serving(gw)


def test_chunked_in_http10_is_400(gw: Gateway) -> None:
    got = closes_after_answer(gw, b"POST /echo HTTP/1.0\r\nHost: " + HOST + b"\r\nTransfer-Encoding: chunked"
                              b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert final_status(got) == 400


def test_bad_chunk_is_400(gw: Gateway) -> None:
    got = closes_after_answer(gw, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nTransfer-Encoding: chunked"
                              b"\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    assert final_status(got) == 400
    still_serving(gw)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.1", b"HTTP/0.9"])
def test_unsupported_version_is_505(gw: Gateway, version: bytes) -> None:
    got = closes_after_answer(gw, b"GET /echo " + version + b"\r\nHost: " + HOST + b"\r\n\r\n")
    assert final_status(got) == 505, got[:300]
    still_serving(gw)


def test_http10_still_works(gw: Gateway) -> None:
    got = raw_exchange(gw.port, b"GET /echo/ten HTTP/1.0\r\nHost: " + HOST + b"\r\n\r\n")
    assert final_status(got) == 200 and b'"/echo/ten"' in got


def test_connect_is_405(gw: Gateway) -> None:
    got = closes_after_answer(gw, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert final_status(got) == 405


# ----------------------------------------------------------------------------- sizes
def test_headers_over_64k_are_431(gw: Gateway) -> None:
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    got = closes_after_answer(gw, b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\n" + big + b"\r\n")
    assert final_status(got) == 431, got[:300]
    still_serving(gw)


def test_a_header_that_never_ends_is_431(gw: Gateway) -> None:
    """One header line trickled in pieces, never finished: stopped at the limit, not buffered on."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nX-Endless: ")
        got = b""
        with contextlib.suppress(OSError):  # once it has answered it may refuse the rest
            for _ in range(40):
                s.sendall(b"a" * 8192)
                time.sleep(0.005)
        s.settimeout(TIMEOUT)
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                got += chunk
    assert final_status(got) == 431, got[:300]
    still_serving(gw)


def test_target_over_64k_is_414(gw: Gateway) -> None:
    got = closes_after_answer(gw, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n")
    assert final_status(got) == 414
    still_serving(gw)


def test_body_over_the_limit_is_413_and_the_answer_arrives(gw: Gateway) -> None:
    # The client sends its whole body without waiting: the 413 must still reach it (no reset).
    got = closes_after_answer(gw, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: 50000\r\n\r\n"
                              + b"x" * 50000)
    assert final_status(got) == 413 and b"--max-body" in got
    ok = raw_exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: 1000\r\n"
                      b"Connection: close\r\n\r\n" + b"y" * 1000)
    assert final_status(ok) == 200 and b'"body_len":1000' in ok


def test_chunked_body_over_the_limit_is_413(gw: Gateway) -> None:
    chunks = b"".join(b"100\r\n" + b"z" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    got = closes_after_answer(gw, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nTransfer-Encoding: chunked"
                              b"\r\n\r\n" + chunks)
    assert final_status(got) == 413
    still_serving(gw)


# ----------------------------------------------------------------------------- time
def test_slow_head_is_408_and_closed(gw: Gateway) -> None:
    t0 = time.monotonic()
    got = raw_exchange(gw.port, b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\n")  # never finished
    assert final_status(got) == 408 and b"--header-timeout" in got
    assert time.monotonic() - t0 < TIMEOUT
    still_serving(gw)


def test_silent_connection_is_closed_without_an_answer(gw: Gateway) -> None:
    assert raw_exchange(gw.port, b"") == b""


def test_idle_keep_alive_is_closed(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n")
        got = b""
        while b'"client"' not in got:
            got += s.recv(65536)
        assert final_status(got) == 200
        rest = b""
        while chunk := s.recv(65536):  # returns b"" when the gateway closes the idle connection
            rest += chunk
        assert rest.endswith(b"}") or rest == b""


def test_three_hundred_slow_clients_delay_no_one(replica: Upstream) -> None:
    with running_gateway("--header-timeout", "2", upstreams=[replica]) as g:
        slow: list[socket.socket] = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT)
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nX-Slow: ")
                slow.append(s)
            for _ in range(5):  # while they all trickle
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.sendall(b"a")
                still_serving(g)
            # ...and each slow one is told 408 once its head is overdue.
            answers = []
            for s in slow:
                got = b""
                with contextlib.suppress(OSError):
                    while chunk := s.recv(4096):
                        got += chunk
                answers.append(final_status(got))
            assert answers == [408] * 300
        finally:
            for s in slow:
                s.close()


# ----------------------------------------------------------------------------- load
def _raise_own_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def test_thousand_concurrent_clients_each_answered(replica: Upstream) -> None:
    _raise_own_nofile(4096)
    n = 1000
    with running_gateway(upstreams=[replica], max_inputs=50) as g:
        async def main() -> list[bytes]:
            # Every connection is open before any request is sent: 1000 at once, for real.
            conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", g.port) for _ in range(n)))
            for i, (_, writer) in enumerate(conns):
                writer.write(b"GET /echo/%d HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n" % i)

            async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
                data = await reader.read()
                writer.close()
                return data

            return await asyncio.wait_for(asyncio.gather(*(answer(r, w) for r, w in conns)), 60)

        results = asyncio.run(main())
        for i, got in enumerate(results):
            assert final_status(got) == 200 and b'"/echo/%d"' % i in got, (i, got[:200])
        m = g.metrics_where("hello", lambda m: m["requests_total"] == n)
        assert m["inflight"] == 0 and m["queued"] == 0 and m["errors_total"] == 0


def test_open_file_limit_is_raised_and_reported(replica: Upstream) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    g = Gateway(0).started()
    try:
        ev = g.wait_event(lambda e: e["type"] == "listening")
        expected = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        assert ev["open_files"] == expected
    finally:
        g.close()


def test_a_low_open_file_limit_is_said_on_stderr() -> None:
    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    g = Gateway(0, stderr=subprocess.PIPE, preexec_fn=low)
    try:
        ev = g.wait_event(lambda e: e["type"] in ("listening", "<eof>"))
        assert ev["type"] == "listening" and ev["open_files"] == 1024
    finally:
        g.close()
    assert g.proc.stderr is not None
    err = g.proc.stderr.read().decode()
    assert "open-file limit is 1024" in err and "ulimit" in err


# ----------------------------------------------------------------------------- property-based
@pytest.fixture(scope="module")
def fuzz_gw(replica: Upstream) -> Iterator[Gateway]:
    with running_gateway("--max-body", "4096", "--header-timeout", "2", upstreams=[replica], timeout=2) as g:
        yield g


def _send_and_read(port: int, data: bytes) -> bytes:
    """Send, half-close, read to the end: the gateway must answer or close, never hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"the gateway neither answered nor closed: {data[:200]!r}") from None
        return got


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=400))
def test_random_bytes_get_4xx_or_a_close(fuzz_gw: Gateway, data: bytes) -> None:
    got = _send_and_read(fuzz_gw.port, data)
    code = final_status(got)
    assert got == b"" or 400 <= code < 500 or code == 505, got[:300]
    assert final_status(raw_exchange(fuzz_gw.port, GOOD)) == 200


_names = st.sampled_from([
    b"Host", b"host", b"HOST", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
    b"X-Forwarded-For", b"Modal-Key", b"Modal-Secret", b"X-Mwtui-Endpoint", b"TE", b"Trailer", b"Keep-Alive",
    b"X-Custom", b"X Bad", b"X:Colon", b"\xff\xfe", b"",
])
_values = st.sampled_from([
    b"demo-hello.localhost", b"localhost", b"127.0.0.1", b"unknown.example", b"[::1]:80", b"", b"0", b"5",
    b"-1", b"abc", b"99999999999999999999", b"chunked", b"gzip, chunked", b"chunked, gzip", b"close",
    b"keep-alive", b"upgrade", b"websocket", b"100-continue", b"a\x00b", b"\x7f", b"x" * 3000,
]) | st.binary(max_size=40)
_lines = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"CONNECT", b"PRI", b"G@T", b""]),
    st.sampled_from([b"/", b"/echo", b"*", b"http://demo-hello.localhost/echo", b"/a b", b"/%00", b""]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1x", b"http/1.1", b""]),
)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    line=_lines,
    headers=st.lists(st.tuples(_names, _values), max_size=8),
    eol=st.sampled_from([b"\r\n", b"\n"]),
    body=st.binary(max_size=200),
)
def test_random_header_mixes_never_break_the_gateway(
    fuzz_gw: Gateway, line: tuple[bytes, bytes, bytes], headers: list[tuple[bytes, bytes]], eol: bytes,
    body: bytes,
) -> None:
    method, target, version = line
    head = b" ".join(x for x in (method, target, version) if x) + eol
    head += b"".join(name + b": " + value + eol for name, value in headers)
    got = _send_and_read(fuzz_gw.port, head + eol + body)
    code = final_status(got)
    # Whatever reached the replica answers as it likes (2xx-4xx); what the gateway refuses is 4xx
    # (505 for a version); it never fails with a 5xx of its own, and never hangs.
    assert got == b"" or 100 <= code < 500 or code == 505, (head[:300], got[:300])
    assert final_status(raw_exchange(fuzz_gw.port, GOOD)) == 200


def test_fuzzing_left_no_connection_behind(fuzz_gw: Gateway) -> None:
    eventually(lambda: 'mwtui_inflight_requests{endpoint="hello"} 0' in fuzz_gw.get("localhost", "/metrics").text,
               10, "nothing left in flight")
