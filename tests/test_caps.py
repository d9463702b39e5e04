"""Replica caps (engine/caps.py): pure, one definition of each rule."""

from __future__ import annotations

from mwtui.engine import caps
from mwtui.engine.manifest import EndpointSpec, PoolSpec


def _pool(kind: str = "fastapi", port: int | None = None, params: str = "", **knobs: object) -> PoolSpec:
    spec = EndpointSpec(name="f", pool="f", kind=kind, label="a-f", port=port, **knobs)  # type: ignore[arg-type]
    return PoolSpec("f", "web_server" if kind == "web_server" else "uvicorn", (spec,), params)


def test_a_fixed_port_is_one_replica_only_on_the_hosts_network() -> None:
    srv = _pool("web_server", 8000, min_containers=3)
    assert caps.shares_ports(srv, own_network=False) and not caps.shares_ports(srv, own_network=True)
    assert caps.cap(srv, False, 8) == (1, "web_server")
    assert caps.cap(srv, True, 8) == (8, "--max-replicas")
    assert caps.scaling(srv, False, 8).min_containers == 1  # clamped: two could not both listen
    assert caps.scaling(srv, True, 8).min_containers == 3
    assert not caps.shares_ports(_pool(), own_network=False)  # no fixed port: nothing shared


def test_max_containers_wins_then_mwtuis_default_never_below_min_containers() -> None:
    assert caps.cap(_pool(max_containers=3), True, 8) == (3, "max_containers")
    assert caps.cap(_pool(min_containers=12), True, 8) == (12, "--max-replicas")
    assert caps.cap(_pool(), True, 0) == (None, None)  # --max-replicas 0: none, as on Modal
    assert caps.scaling(_pool(max_containers=3), True, 8).max_containers == 3


def test_sets_of_class_parameters() -> None:
    params = '{"parameters": [{"name": "n", "type": "str"}]}'
    assert caps.max_sets(_pool(), True) == 1  # a plain pool: its one, empty set
    assert caps.max_sets(_pool(params=params), True) == caps.MAX_SETS == 32
    assert caps.max_sets(_pool("web_server", 8000, params=params), False) == 1
