"""How many replicas a pool may have, and why: one definition of each rule, pure.

- A pool with fixed ports (`@modal.web_server(port)`) on the host's network can have one replica (and
  one set of class parameters) at a time; in a network of its own per replica (worker/network.py), as
  many as any other.
- Otherwise the app's `max_containers` wins; without it mwtui's own default (`--max-replicas`, never below
  `min_containers`): on one machine a crowd must not fork a replica per client. 0: no cap, as on Modal.
"""

from __future__ import annotations

from dataclasses import replace

from .autoscaler import CAP_DEFAULT, CAP_MAX_CONTAINERS, CAP_WEB_SERVER, ScalingConfig
from .gateway.routes import MAX_VARIANTS as MAX_SETS  # sets of one class's values at once: the gateway's
from .manifest import PoolSpec


def shares_ports(spec: PoolSpec, own_network: bool) -> bool:
    """Do its replicas listen on fixed ports of the host's own network (so one at a time)?"""
    return bool(spec.fixed_ports) and not own_network


def cap(spec: PoolSpec, own_network: bool, max_replicas: int) -> tuple[int | None, str | None]:
    """(the most replicas, where that comes from); (None, None): no cap at all."""
    if shares_ports(spec, own_network):
        return 1, CAP_WEB_SERVER
    knobs = spec.knobs
    if knobs.max_containers is not None:
        return knobs.max_containers, CAP_MAX_CONTAINERS
    if max_replicas:
        return max(max_replicas, knobs.min_containers), CAP_DEFAULT
    return None, None


def scaling(spec: PoolSpec, own_network: bool, max_replicas: int) -> ScalingConfig:
    """The autoscaler's knobs for the pool: Modal's, within its cap."""
    cfg = ScalingConfig.from_spec(spec.knobs)
    if shares_ports(spec, own_network):
        cfg = replace(cfg, min_containers=min(cfg.min_containers, 1))
    top, source = cap(spec, own_network, max_replicas)
    return replace(cfg, max_containers=top, cap_from=source or CAP_MAX_CONTAINERS)


def max_sets(spec: PoolSpec, own_network: bool) -> int:
    """Sets of class parameters at once: one for a plain pool; on the host's network a fixed port
    cannot be held by two sets."""
    return 1 if shares_ports(spec, own_network) or not spec.parameters else MAX_SETS
