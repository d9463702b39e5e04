"""The routes the gateway is sent: every endpoint of every pool group, with its ready replicas.

Pure: made from the groups as they are now, no I/O (the facade sends the result, numbered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .manifest import EndpointSpec

if TYPE_CHECKING:
    from .pool_group import PoolGroup
    from .supervisor import Pool

HOLD_EXTRA_S = 30.0  # a request waits for a replica this long beyond the function's startup_timeout


def _entry(spec: EndpointSpec, name: str, state: str, upstreams: list[dict[str, Any]], port: int | None) -> dict[str, Any]:
    if spec.is_call:
        port = None
    return {
        "name": name,
        "label": spec.label,
        "domains": list(spec.custom_domains),
        "port": port,
        "requires_proxy_auth": spec.requires_proxy_auth,
        "state": state,
        "hold_s": (spec.startup_timeout or 0) + HOLD_EXTRA_S,
        "max_inputs": spec.max_inputs,  # per replica, Modal's @concurrent (default 1)
        "timeout": spec.timeout,  # per request, seconds: over it the gateway answers 504
        "upstreams": upstreams,
        # Called by other pools only: never listed, no own port (the label is `<pool>.<app>.call`).
        **({"internal": True} if spec.is_call else {}),
    }


def _upstreams(pool: Pool, endpoint: str) -> list[dict[str, Any]]:
    return [
        {"id": r.id, "address": r.upstreams[endpoint].address, "dispatch": r.upstreams[endpoint].dispatch,
         "generation": r.generation}
        for r in pool.ready_replicas()
        if endpoint in r.upstreams
    ]


def routes(groups: Iterable[PoolGroup], own_port: Callable[[str], int | None]) -> list[dict[str, Any]]:
    """A parametrized class's endpoint routes requests to its sets (by their values, `params`); each
    pool's endpoint routes to its ready replicas. `own_port(endpoint)`: its own port on the gateway."""
    out = []
    for group in groups:
        for spec in group.spec.endpoints if group.parametrized else ():
            route = _entry(spec, spec.name, group.state(), [], own_port(spec.name))
            route.update(params=group.spec.parameters, max_variants=group.limit)
            out.append(route)
        for pool in group.pools():
            v = pool.variant
            for spec in pool.spec.endpoints:
                if v is None:
                    out.append(_entry(spec, spec.name, pool.state, _upstreams(pool, spec.name), own_port(spec.name)))
                    continue
                # A set is reached through its class's endpoint: no label, domain or port of its own.
                route = _entry(spec, spec.name + v.suffix, pool.state, _upstreams(pool, spec.name), None)
                route.update(parent=spec.name, values=v.values, domains=[])
                out.append(route)
    return out
