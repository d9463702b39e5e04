"""The gateway's compiled hot path (engine/gateway/native.py): used only when built from the sources as
they are, and serving exactly what the sources serve.

`make test` compiles it first; the end-to-end checks compare a real gateway running the compiled
modules with one told to run its sources (MWTUI_PURE_GATEWAY=1), in front of the same uvicorn replica.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mwtui.engine.gateway import native

from .fixtures.gateway_harness import Gateway, Upstream, endpoint, raw_exchange, up

pytestmark = pytest.mark.timeout(60)

HOST = b"demo-hello.localhost"


# ----------------------------------------------------------------------------- which modules run
def fake_package(root: Path, built: tuple[str, ...] = (*native.MODULES, f"{native.GROUP}__mypyc")) -> Path:
    """engine/gateway/ with its sources (and the engine modules a build depends on), and
    extension files for `built`."""
    folder = root / "engine" / "gateway"
    folder.mkdir(parents=True)
    for name in (*native.MODULES, "pages", "native"):
        (folder / f"{name}.py").write_text(f"# {name}\n")
    for name in ("params", "ports"):
        (root / "engine" / f"{name}.py").write_text(f"# {name}\n")
    for name in built:
        (folder / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    return folder


def stamped(folder: Path) -> Path:
    (folder / native.STAMP).write_text(native.digest(folder) + "\n")
    return folder


def test_nothing_built_runs_the_sources(tmp_path: Path) -> None:
    assert native.state(fake_package(tmp_path, built=())) == native.ABSENT


def test_a_whole_build_of_these_very_sources_is_used(tmp_path: Path) -> None:
    assert native.state(stamped(fake_package(tmp_path))) == native.COMPILED


@pytest.mark.parametrize("edited", ["gateway/proxy.py", "gateway/pages.py", "params.py"])
def test_an_edit_to_what_the_build_depends_on_makes_it_stale(tmp_path: Path, edited: str) -> None:
    folder = stamped(fake_package(tmp_path))
    (tmp_path / "engine" / edited).write_text("# edited after the build\n")
    assert native.state(folder) == native.STALE


def test_a_build_without_its_stamp_is_stale(tmp_path: Path) -> None:
    """Say, a build interrupted while it copied: the stamp is written last."""
    assert native.state(fake_package(tmp_path)) == native.STALE


@pytest.mark.parametrize("missing", ["server", f"{native.GROUP}__mypyc"])
def test_a_partial_build_is_stale(tmp_path: Path, missing: str) -> None:
    built = tuple(n for n in (*native.MODULES, f"{native.GROUP}__mypyc") if n != missing)
    assert native.state(stamped(fake_package(tmp_path, built=built))) == native.STALE


# ----------------------------------------------------------------------------- the same answers
@pytest.fixture(scope="module")
def pair(unix_upstream: Upstream) -> Iterator[tuple[Gateway, Gateway]]:
    if native.state(native.FOLDER) != native.COMPILED:
        pytest.skip("the gateway is not compiled here (`make test` compiles it)")
    compiled = Gateway().started()
    pure = Gateway(env={"MWTUI_PURE_GATEWAY": "1"}).started()
    try:
        for g in (compiled, pure):
            g.routes(endpoint(upstreams=[up(unix_upstream)]))
        yield compiled, pure
    finally:
        compiled.close()
        pure.close()


def test_each_gateway_says_what_it_runs(pair: tuple[Gateway, Gateway]) -> None:
    compiled, pure = pair
    assert compiled.events[0]["native"] is True
    assert pure.events[0]["native"] is False


EXCHANGES = {
    "get": b"GET /echo?q=1 HTTP/1.1\r\nHost: " + HOST + b"\r\nX-Custom: yes\r\nConnection: close\r\n\r\n",
    "head": b"HEAD /big?n=100 HTTP/1.1\r\nHost: " + HOST + b"\r\nConnection: close\r\n\r\n",
    "post": b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "chunked": b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "http10": b"GET /big?n=10 HTTP/1.0\r\nHost: " + HOST + b"\r\n\r\n",
    "pipelined": b"GET /big?n=3 HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n"
                 b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nConnection: close\r\n\r\n",
    "unknown-host": b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n",
    "malformed": b"GET / HTTP/1.1\r\nHost : " + HOST + b"\r\n\r\n",
    "big": b"GET /big?n=300000 HTTP/1.1\r\nHost: " + HOST + b"\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("name", EXCHANGES)
def test_compiled_answers_what_the_sources_answer(pair: tuple[Gateway, Gateway], name: str) -> None:
    compiled, pure = pair
    got = [  # less the Date header, and each gateway's own port (its pages name it)
        re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"", raw_exchange(g.port, EXCHANGES[name]))
        .replace(b":%d" % g.port, b":PORT")
        for g in (compiled, pure)
    ]
    assert got[0] and got[0] == got[1], (got[0][:400], got[1][:400])
