"""The routing table: plain data built whole from one `routes` message, then swapped in one assignment.

Nothing here does I/O. Hosts are kept as lowercased bytes without a port, the form the hot path
computes from a request's Host header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final

from ..params import TYPES, ParamError, ParamSpec, from_query, query_of, variant_name
from .metrics import EndpointStats, Metrics, UpstreamStats

# The hosts that mean "mwtui itself" on the main listener, whatever the port. Only loopback names:
# a web page that rebinds its own DNS name to 127.0.0.1 still sends that name, and gets a 404.
BARE_HOSTS: Final = frozenset({b"localhost", b"127.0.0.1", b"[::1]", b"::1"})
STATES: Final = frozenset({"starting", "running", "idle", "stopped", "failed"})
DISPATCH_HEADER: Final = b"x-mwtui-endpoint"
MAX_VARIANTS: Final = 32  # parameter sets of one class endpoint served at once, unless the routes say otherwise


class RouteError(ValueError):
    """A `routes` message (or one entry of it) that cannot be used; the text says why."""


class Upstream:
    __slots__ = ("id", "address", "dispatch", "dispatch_line", "stats", "pool", "generation")

    def __init__(self, id: str, address: str, dispatch: str | None, stats: UpstreamStats) -> None:
        self.id = id
        self.address = address
        self.dispatch = dispatch
        # Pre-built once per table so that the hot path only joins bytes.
        self.dispatch_line = DISPATCH_HEADER + b": " + dispatch.encode("latin-1") + b"\r\n" if dispatch else b""
        self.stats = stats
        self.pool: Any = None  # the connection pool for `address`, set by the gateway
        self.generation = 0  # the engine's reload generation its replica runs (for the inspector)


class Endpoint:
    __slots__ = (
        "name", "label", "domains", "port", "requires_proxy_auth", "state", "hold_s", "upstreams", "stats",
        "max_inputs", "timeout", "params", "parent", "values", "max_variants", "plain", "internal", "ring",
    )

    def __init__(
        self,
        name: str,
        label: str,
        domains: list[str],
        port: int | None,
        requires_proxy_auth: bool,
        state: str,
        hold_s: float,
        upstreams: list[Upstream],
        stats: EndpointStats,
        max_inputs: int = 0,
        timeout: float = 0.0,
        params: list[ParamSpec] | None = None,
        parent: str | None = None,
        values: dict[str, Any] | None = None,
        max_variants: int = MAX_VARIANTS,
    ) -> None:
        self.name = name
        self.label = label
        self.domains = domains
        self.port = port
        self.requires_proxy_auth = requires_proxy_auth
        self.state = state
        self.hold_s = hold_s
        self.upstreams = upstreams
        self.stats = stats
        self.max_inputs = max_inputs  # requests at once per replica (Modal's @concurrent); 0: no cap
        self.timeout = timeout  # seconds a request may run on a replica (Modal's `timeout`); 0: none
        # A parametrized class's endpoint takes its parameters from the query string and serves each
        # set of values from a pool of its own: the entry named `parent?values` (see engine/params.py).
        self.params = params  # on the parent: the class's parameters; None for every other endpoint
        self.parent = parent  # on a parameter set's entry: the endpoint whose label it answers to
        self.values = values  # on a parameter set's entry: its values (JSON form)
        self.max_variants = max_variants
        # Nothing to check before picking a replica: Gateway.route takes its short path.
        self.plain = not requires_proxy_auth and params is None and state != "stopped"
        self.internal = False  # a function or class other pools call: not listed to people
        self.ring: Any = None  # the inspector's ring of its recent requests (inspector.Ring), while on

    def pick(self) -> Upstream | None:
        """The upstream whose replica has the fewest requests in flight (the first on a tie), or None
        if there is none or every one is at `max_inputs`. In flight counts per replica (its pool,
        keyed by address), not per endpoint: a class's endpoints share their replicas' capacity."""
        ups = self.upstreams
        if not ups:
            return None
        best = ups[0]
        low = best.pool.inflight
        if len(ups) > 1:
            for up in ups:
                n = up.pool.inflight
                if n < low:
                    best, low = up, n
        cap = self.max_inputs
        if cap and low >= cap:
            return None
        return best


def host_key(host: bytes) -> bytes:
    """`Demo-Hello.localhost:8470` -> `demo-hello.localhost`; `[::1]:80` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end >= 0 else host
    colon = host.rfind(b":")
    if colon >= 0 and host.find(b":") == colon:  # one colon: a port; several: a bare IPv6 address
        host = host[:colon]
    return host.rstrip(b".")


def is_loopback_host(key: bytes) -> bool:
    """`key` (from `host_key`) names this machine by a loopback name or address: 127.0.0.0/8, ::1."""
    if key in BARE_HOSTS:
        return True
    try:
        return ipaddress.ip_address(key.decode("ascii").strip("[]")).is_loopback
    except (ValueError, UnicodeDecodeError):
        return False


# A Host header's name part as this gateway takes it (RFC 3986 reg-name without percent-encoding or
# sub-delims, lowercased; an IDN arrives in its ASCII form). Anything else is a 400: `localhost:80@evil`
# must not be read as localhost.
_NAME_BYTES: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._~")


def valid_host(host: bytes) -> bool:
    """`host` (a Host header value) is a name, IPv4 address or bracketed IPv6 address, with an optional
    `:port` of digits. Empty is valid (HTTP/1.0 without Host; the parser refuses it in 1.1)."""
    h = host.strip().lower()
    if h.startswith(b"["):
        end = h.find(b"]")
        if end < 0 or not _is_ipv6(h[1:end]):
            return False
        port = h[end + 1:]
        return not port or (port[:1] == b":" and _valid_port(port[1:]))
    name, colon, port = h.partition(b":")
    if colon and not _valid_port(port):
        return False
    return len(name) <= 255 and all(c in _NAME_BYTES for c in name)


def _valid_port(port: bytes) -> bool:
    return len(port) <= 5 and all(48 <= c <= 57 for c in port)  # empty is allowed: `host:`


def _is_ipv6(text: bytes) -> bool:
    try:
        ipaddress.IPv6Address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def is_ip_literal(key: bytes) -> bool:
    """`key` (from `host_key`) is an IP address, not a name: no DNS rebinding can hide behind it."""
    try:
        ipaddress.ip_address(key.decode("ascii").strip("[]"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def is_local_name(key: bytes) -> bool:
    """`key` (from `host_key`) can only mean this machine: a loopback name or address, or a name under
    `.localhost`, which browsers resolve to loopback themselves (RFC 6761), never through DNS."""
    return is_loopback_host(key) or key.endswith(b".localhost")


def own_port_accepts(key: bytes, table: RouteTable, allowed: frozenset[bytes]) -> bool:
    """Whether an endpoint's own port answers a request with this Host (from `host_key`). A page on a
    foreign name that rebinds its DNS to 127.0.0.1 still sends that name: refused, unless the person
    named it with --allow-host. IP literals, local names, labels and custom domains are ours."""
    return not key or is_local_name(key) or is_ip_literal(key) or key in table.by_host or key in allowed


def parse_address(address: str) -> tuple[str, str | tuple[str, int]]:
    """`unix:/path.sock` -> ("unix", path); `tcp:host:port` -> ("tcp", (host, port)); `netns:/path.sock`
    -> ("netns", path): a replica that hands over TCP connections from its own network (see handoff)."""
    kind, _, rest = address.partition(":")
    if kind in ("unix", "netns") and rest:
        return kind, rest
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return "tcp", (host, int(port))
    raise RouteError(f"bad upstream address {address!r} (want unix:/path, netns:/path or tcp:host:port)")


class RouteTable:
    __slots__ = ("endpoints", "by_host")

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.by_host: dict[bytes, Endpoint] = {}
        for ep in endpoints:
            self.endpoints[ep.name] = ep
            if ep.parent is not None:  # reached through its parent's label and the query string
                continue
            for host in (f"{ep.label}.localhost", *ep.domains):
                key = host_key(host.encode("idna") if not host.isascii() else host.encode())
                self.by_host.setdefault(key, ep)  # first endpoint wins a clash, like Modal's first claim

    def lookup(self, host: bytes) -> Endpoint | None:
        return self.by_host.get(host_key(host))

    def variants_of(self, parent: str) -> int:
        return sum(1 for ep in self.endpoints.values() if ep.parent == parent)

    def add_variant(self, parent: Endpoint, name: str, values: dict[str, Any], metrics: Metrics) -> Endpoint:
        """An entry for a parameter set the engine has not routed yet: it starts with no replica, so
        its requests wait (and wake the engine) exactly as at a pool scaled to zero."""
        ep = Endpoint(
            name, parent.label, [], None, parent.requires_proxy_auth, "starting", parent.hold_s, [],
            metrics.endpoint(name), parent.max_inputs, parent.timeout, parent=parent.name, values=values,
        )
        self.endpoints[name] = ep
        return ep


def _endpoint(raw: Any, metrics: Metrics) -> Endpoint:
    if not isinstance(raw, dict):
        raise RouteError("an endpoint entry is not an object")
    name, label = raw.get("name"), raw.get("label")
    if not isinstance(name, str) or not name or not isinstance(label, str) or not label:
        raise RouteError(f"endpoint entry without a name or label: {raw!r:.200}")
    port = raw.get("port")
    if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
        raise RouteError(f"{name}: bad port {port!r}")
    state = raw.get("state", "running")
    if state not in STATES:
        raise RouteError(f"{name}: unknown state {state!r}")
    domains = [str(d) for d in raw.get("domains") or () if d]
    ups: list[Upstream] = []
    for u in raw.get("upstreams") or ():
        if not isinstance(u, dict) or not isinstance(u.get("id"), str) or not isinstance(u.get("address"), str):
            raise RouteError(f"{name}: bad upstream entry {u!r:.200}")
        parse_address(u["address"])
        dispatch = u.get("dispatch")
        if dispatch is not None and (not isinstance(dispatch, str) or "\r" in dispatch or "\n" in dispatch):
            raise RouteError(f"{name}: bad dispatch value {dispatch!r}")
        up = Upstream(u["id"], u["address"], dispatch, metrics.upstream(name, u["id"]))
        generation = u.get("generation")
        up.generation = generation if isinstance(generation, int) and not isinstance(generation, bool) else 0
        ups.append(up)
    hold_s = raw.get("hold_s", 30.0)
    if not isinstance(hold_s, (int, float)) or hold_s < 0:
        raise RouteError(f"{name}: bad hold_s {hold_s!r}")
    # Absent means no cap and no time limit: the engine always sends both (Modal's defaults are 1 and
    # 300 s); tools that drive the gateway by hand get a plain proxy.
    max_inputs = raw.get("max_inputs")
    if max_inputs is not None and (isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs < 0):
        raise RouteError(f"{name}: bad max_inputs {max_inputs!r}")
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        raise RouteError(f"{name}: bad timeout {timeout!r}")
    params = raw.get("params")
    if params is not None:
        if not isinstance(params, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and p.get("type") in TYPES for p in params
        ):
            raise RouteError(f"{name}: bad params {params!r:.200}")
        params = [ParamSpec.from_json(p) for p in params]
    parent, values = raw.get("parent"), raw.get("values")
    if parent is not None and (not isinstance(parent, str) or not isinstance(values, dict)):
        raise RouteError(f"{name}: a parameter set's entry needs a parent name and a values object")
    max_variants = raw.get("max_variants", MAX_VARIANTS)
    if isinstance(max_variants, bool) or not isinstance(max_variants, int) or max_variants < 1:
        raise RouteError(f"{name}: bad max_variants {max_variants!r}")
    ep = Endpoint(
        name, label, domains, port, bool(raw.get("requires_proxy_auth")), state, float(hold_s), ups,
        metrics.endpoint(name), max_inputs or 0, float(timeout or 0), params, parent, values, max_variants,
    )
    ep.internal = bool(raw.get("internal"))
    return ep


def build_table(message: dict[str, Any], metrics: Metrics) -> tuple[RouteTable, list[str]]:
    """The new table and a warning per entry that had to be skipped (the rest still applies)."""
    raw = message.get("endpoints")
    if not isinstance(raw, list):
        raise RouteError("routes message without an endpoints list")
    endpoints: list[Endpoint] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for entry in raw:
        try:
            ep = _endpoint(entry, metrics)
        except RouteError as e:
            warnings.append(str(e))
            continue
        if ep.name in seen:
            warnings.append(f"duplicate endpoint {ep.name!r} ignored")
            continue
        seen.add(ep.name)
        endpoints.append(ep)
    table = RouteTable(endpoints)
    live = {(ep.name, up.id) for ep in endpoints for up in ep.upstreams}
    for key in [k for k in metrics.upstreams if k not in live]:
        metrics.forget_upstream(*key)
    # Parameter sets come and go; their counters go with them once nothing is in flight there.
    for gone in [n for n, st in metrics.endpoints.items() if n not in table.endpoints and not st.inflight]:
        del metrics.endpoints[gone]
    return table, warnings


def carry_variants(old: RouteTable, new: RouteTable, waiting: Iterable[str], metrics: Metrics) -> None:
    """Keep, in `new`, the gateway's own entries for parameter sets that requests still wait at
    but that the engine has not routed yet: a table sent meanwhile must not drop them."""
    for name in waiting:
        ep = old.endpoints.get(name)
        if ep is None or ep.parent is None or name in new.endpoints:
            continue
        parent = new.endpoints.get(ep.parent)
        if parent is None or parent.params is None or ep.values is None:
            continue
        try:  # the class's parameters may have changed with this table: then the set is no more
            same = variant_name(parent.name, from_query(parent.params, query_of(ep.values))) == name
        except ParamError:
            same = False
        if same:
            new.add_variant(parent, name, ep.values, metrics)
