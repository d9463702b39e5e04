"""Manifest records: JSON round trip, pools, the server each pool runs; stable own ports."""

from mwtui.engine.manifest import AppManifest, EndpointSpec, LoadError
from mwtui.engine.ports import OWN_PORT_BASE, OWN_PORT_SPAN, stable_port


def _ep(name: str, kind: str, pool: str | None = None) -> EndpointSpec:
    return EndpointSpec(name=name, pool=pool or name, kind=kind, label=name.lower().replace(".", "-"))  # type: ignore[arg-type]


def test_pools_pick_their_server() -> None:
    m = AppManifest(
        "a", "/a.py",
        endpoints=(
            _ep("f", "fastapi"), _ep("w", "wsgi"), _ep("s", "web_server"), _ep("g", "asgi"),
            _ep("C.x", "wsgi", "C"), _ep("C.y", "fastapi", "C"),
        ),
    )
    servers = {p.name: p.server for p in m.pools()}
    assert servers == {"f": "uvicorn", "w": "gunicorn", "s": "web_server", "g": "uvicorn", "C": "uvicorn"}
    assert [e.name for e in next(p for p in m.pools() if p.name == "C").endpoints] == ["C.x", "C.y"]


def test_json_round_trip() -> None:
    m = AppManifest(
        "a", "/a.py", "app",
        endpoints=(EndpointSpec("f", "f", "fastapi", "a-f", method="POST", custom_domains=("x.com",)),),
        warnings=("w",),
        error=LoadError("bad", "/a.py", 3, "tb"),
    )
    assert AppManifest.from_json(m.to_json()) == m


def test_stable_port_is_stable_and_in_range() -> None:
    a = stable_port("/x/app.py", "hello")
    assert a == stable_port("/x/app.py", "hello")
    assert a != stable_port("/x/app.py", "other") or a != stable_port("/y/app.py", "hello")
    assert OWN_PORT_BASE <= a < OWN_PORT_BASE + OWN_PORT_SPAN
