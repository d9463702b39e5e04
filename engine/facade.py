"""The engine facade: wires discovery, supervisor, gateway and reloader, publishes snapshots, takes
commands.

The screen, the headless `serve` printer and the gateway's status page all read the same immutable
`Snapshot`; commands (start, stop, restart, scale, reload) come in here and never go straight to a
process. What is served is always what each pool's current generation runs: a reload that fails
leaves the previous generation (and its manifest entries) in place.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import shutil
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlencode

from . import caps, replica_env, route_table, scratch
from .autoscaler import DEFAULT_MAX_REPLICAS, Autoscaler, ScalingConfig
from .discovery import discover_async
from .events import ENGINE_LOG, Callers, Event, EventHub, LogLine, PoolChanged, access_lines
from .gateway.limits import Limits
from .gateway_link import GatewayError, GatewayLink
from .lifeline import Lifeline
from .loader import AppRef
from .manifest import AppManifest, EndpointSpec, LoadError, PoolSpec
from .memory import tree_pss
from .params import query_of
from .pool_group import PoolGroup, routed
from .ports import DEFAULT_GATEWAY_PORT, loopback_host, stable_port
from .project import ServedApp, clashes, local_name, owned_by, scope_manifest, scope_of, scopes, without
from .reloader import Reloader, WatchRules
from .scheduler import Scheduler
from .snapshots import Snapshots
from .spawner import Spawner, default_spawner
from .status import LOG_LINES_KEPT, EndpointStatus, PoolBrief, ReloadStatus, RowMaker, Snapshot, label_url
from .supervisor import Pool, Variant, process_children
from .worker import container, network


class LoadFailed(Exception):
    """The app file could not be loaded at start; `error` says why, for a person."""

    def __init__(self, error: LoadError) -> None:
        super().__init__(error.message)
        self.error = error


class Engine:
    def __init__(
        self,
        ref: AppRef | Sequence[AppRef],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_GATEWAY_PORT,
        own_ports: bool = True,
        reload: bool = True,
        wait_for_fix: bool = False,
        watch_rules: WatchRules | None = None,
        spawner: Spawner | None = None,
        limits: Limits | None = None,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
    ) -> None:
        refs = [ref] if isinstance(ref, AppRef) else list(ref)
        self.ref = refs[0]  # the first app file (the screen's title)
        self.max_replicas = max_replicas  # per pool, where the app sets no max_containers; 0: none
        self.mode = container.mode()  # what replicas run in (each replica still says if it cannot)
        # Whether web_server replicas get a network of their own (many replicas on one fixed port).
        self.network = network.mode()
        self._own_network = self.network[0] == "own"
        self._network_told = False
        self.spawner: Spawner = spawner or default_spawner()  # the zygote where os.fork exists
        self.snapshots = Snapshots(  # a generation's replicas are forked from its snapshot
            self.spawner, lambda g: self.groups[g].generations() if g in self.groups else set(), self._snapshot_log)
        self.host = host
        self.lifeline = Lifeline()
        self.gateway = GatewayLink(host, port, self.lifeline, self._on_gateway_event, limits=limits)
        self.own_ports = own_ports
        # The app files served, each with its scope (see project.py), the manifest it serves and its reloader.
        self.apps = [ServedApp(r, scope) for r, scope in zip(refs, scopes(refs), strict=True)]
        # One group per function or class, in the files' order: its pools, one per set of parameter
        # values (a plain one has one set; a parametrized class's are made as requests ask for them).
        self.groups: dict[str, PoolGroup] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.generation = 1
        self.reload_enabled = reload
        # A file that does not load at start is fatal, unless we may wait for a good save.
        self.wait_for_fix = wait_for_fix
        for app in self.apps:
            app.reloader = Reloader(
                app.ref.path, enabled=reload, rules=watch_rules or WatchRules(), discover=partial(self._discover, app),
                apply=partial(self._apply_manifest, app), say=self._say, changed=self._notify,
                starting=lambda: any(p.starting_replicas() for p in self.pools.values()),
                mine=owned_by(self.apps, app) if len(self.apps) > 1 else None,
            )
        self.hub = EventHub()  # subscribers, and each pool's recent log lines
        self._metrics: dict[str, dict[str, Any]] = {}
        self._call_token = secrets.token_hex(16)  # replicas send it with each call to another pool
        self.callers = Callers()  # who called each function or class lately
        self.scheduler = Scheduler(self.gateway.request, self._call_token, self._say, self._stopped)
        self._socket_dir = scratch.make("sock", short=True)
        self._status_task: asyncio.Task[None] | None = None
        self._memory_total = 0  # PSS of mwtui's whole process tree, sampled with the replicas
        self._closed = False

    # ----- lifecycle
    async def start(self) -> Snapshot:
        # Folders of mwtui processes that were killed (nothing else removes them), before we add ours.
        left = scratch.sweep()
        if left:
            self._say(f"removed {len(left)} temporary folder(s) left by mwtui processes that were killed")
        manifests = await asyncio.gather(*(app.reloader.first_load() for app in self.apps))
        broken = next((m for m in manifests if m.error), None)
        if broken is not None and not (self.wait_for_fix and self.reload_enabled):
            raise LoadFailed(broken.error)  # type: ignore[arg-type]
        await self.gateway.start()
        if self.gateway.native is False:
            # Short enough for an 80-column log line; how and why: engine/gateway/native.py.
            self._say("gateway runs uncompiled (slower); `make` compiles it")
        for app, manifest in zip(self.apps, manifests, strict=True):
            app.reloader.loaded(manifest.sources, manifest.error)
            if not manifest.error:  # else wait for a good save: the error shows, the first fix brings it up
                app.manifest = self._claim(app, manifest)
                self._tell_network(app.manifest)
                for spec in app.manifest.pools():
                    self._add_group(spec)
        self._order_groups()
        self._publish_routes()
        self.scheduler.update(self._endpoints())
        self.scheduler.start()
        loop = asyncio.get_running_loop()
        self._status_task = loop.create_task(self._status_loop())
        for app in self.apps:
            app.reloader.start()
        return self.snapshot()

    def _claim(self, app: ServedApp, manifest: AppManifest) -> AppManifest:
        """The app's manifest scoped, less what another app served already claims (said once a save)."""
        mine = scope_manifest(manifest, app.scope)
        others = [a.manifest for a in self.apps if a is not app and a.manifest is not None]
        dropped, messages = clashes([*others, mine])[-1]
        for message in messages:
            if message not in app.clash_messages:
                self._say(message)
        app.clash_messages = messages
        return without(mine, dropped)

    def _order_groups(self) -> None:
        """The groups in the files' order, each file's in its own order."""
        order = [spec.name for app in self.apps if app.manifest for spec in app.manifest.pools()]
        self.groups = {name: self.groups[name] for name in order if name in self.groups}

    def _endpoints(self) -> list[EndpointSpec]:
        return [e for app in self.apps if app.manifest for e in app.manifest.endpoints]

    def _app_of(self, pool: str) -> ServedApp:
        """The app a pool (or group, or endpoint) belongs to, by its scope."""
        scope = scope_of(pool.partition("?")[0])
        return next((a for a in self.apps if a.scope == scope), self.apps[0])

    async def _discover(self, app: ServedApp) -> AppManifest:
        """The app imported once more, in the isolated import child (it dies with mwtui); meanwhile each
        of its pools' snapshot of it is taken, in case it loads."""
        ahead = self.snapshots.prewarm(self.generation + 1, app.owns_pool) if app.manifest is not None else lambda: None
        try:
            manifest = await discover_async(app.ref, spawner=self.spawner, **self._lifeline_kwargs())
        except BaseException:
            ahead()  # superseded by a newer save: stop those imports now
            raise
        if manifest.error:
            ahead()
        return manifest

    @property
    def load_error(self) -> LoadError | None:
        """The latest save's error while it does not load (the previous version keeps serving); of the
        first app whose latest save does not load."""
        return next((a.reloader.error for a in self.apps if a.reloader.error is not None), None)

    @property
    def manifest(self) -> AppManifest | None:
        """The first app's manifest being served (one app's engine: its only one)."""
        return self.apps[0].manifest

    def _tell_network(self, manifest: AppManifest) -> None:
        """Once: why web_server replicas share the host's network, where the app has them."""
        kind, why = self.network
        if kind == "own" or self._network_told or not any(p.fixed_ports for p in manifest.pools()):
            return
        self._network_told = True
        self._say(f"web_server replicas run on the host's network, one at a time per pool ({why})")

    def _cap(self, spec: PoolSpec) -> tuple[int | None, str | None]:
        return caps.cap(spec, self._own_network, self.max_replicas)

    def _scaling(self, spec: PoolSpec) -> ScalingConfig:
        return caps.scaling(spec, self._own_network, self.max_replicas)

    @property
    def pools(self) -> dict[str, Pool]:
        """Every pool by its name (a set of a class's parameters: `Greeter?name=ann`)."""
        return {pool.name: pool for group in self.groups.values() for pool in group.sets.values()}

    def _add_group(self, spec: PoolSpec) -> PoolGroup:
        group = self.groups[spec.name] = PoolGroup(spec, caps.max_sets(spec, self._own_network))
        values = group.default_values()
        if values is not None:
            self._add_set(group, values)
        return group

    def _add_set(self, group: PoolGroup, values: dict[str, Any]) -> Pool | None:
        """The pool of this set of values, made (and started) if it has none and the group has room."""
        key = group.key_of(values)
        pool = group.sets.get(key)
        if pool is not None:
            return pool
        if group.full():
            self._say(f"{group.name}: {group.limit} set(s) of parameters are served already; "
                      f"{query_of(values)} waits until one of them scales to zero")
            return None
        app = self._app_of(group.name)
        pool = Pool(
            group.spec, app.ref, self._socket_dir, self.lifeline, self._emit, self.generation, self.gateway.routes_applied,
            self.spawner, self._replica_env(app), Variant.of(group.name, values) if group.parametrized
            else None, own_network=self._own_network, spawner_for=functools.partial(self.snapshots.spawner, group.name),
        )
        group.add(key, pool, Autoscaler(self._scaling(group.spec), time.monotonic()))
        self.logs.setdefault(pool.name, deque(maxlen=LOG_LINES_KEPT))  # its log shows, even empty
        if group.stopped:
            pool.pause()
        pool.start()
        if group.parametrized:
            self._say(f"{pool.name}: a new set of parameters, served by replicas of its own")
        return pool

    def _reap_sets(self) -> None:
        """Remove parameter sets that have scaled to zero: nothing runs, starts or waits there."""
        gone = [pool for group in self.groups.values() for pool in group.reap(self._metrics)]
        for pool in gone:
            self.logs.pop(pool.name, None)
            task = asyncio.get_running_loop().create_task(pool.close())
            self._background.add(task)  # the loop holds tasks weakly
            task.add_done_callback(self._background.discard)
            self._say(f"{pool.name}: scaled to zero, its pool is removed until a request asks for it again")
        if gone:
            self._publish_routes()
            self.snapshots.sweep()

    def _lifeline_kwargs(self) -> dict[str, Any]:
        """So that discovery (and the zygote it may start) die with mwtui, however it dies."""
        return {"env": {**os.environ, **self.lifeline.env()}, "pass_fds": (self.lifeline.child_fd,)}

    def _replica_env(self, app: ServedApp) -> dict[str, str]:
        """What every replica is told of mwtui: its app's endpoint URLs (`get_web_url()`), and where and
        how its calls to other pools go (through the gateway, with this run's token)."""
        host, port = self._call_address() or ("127.0.0.1", 0)
        return {replica_env.WEB_URLS: self._web_urls(app), replica_env.GATEWAY: f"{host}:{port}",
                replica_env.CALL_TOKEN: self._call_token, replica_env.APP: app.name}

    def _call_address(self) -> tuple[str, int] | None:
        """Where calls between pools go: the gateway, by a loopback address when it listens on all."""
        return (loopback_host(self.host), self.gateway.port) if self.gateway.port else None

    def _stopped(self, name: str) -> bool:
        group = self.groups.get(name)
        return group is None or group.stopped

    def run_function(self, name: str) -> None:
        """Run function `name` once now, with no arguments (a scheduled one's "run now")."""
        spec = self.endpoint_spec(name)
        if spec is None or spec.kind != "function":
            raise KeyError(f"no function named {name!r}")
        self.scheduler.run_now(spec)

    def _web_urls(self, app: ServedApp) -> str:
        """What `Function.get_web_url()` answers inside the app's replicas: its endpoints' label URLs."""
        m = app.manifest
        return json.dumps({local_name(e.name): label_url(e.label, self.gateway.port)
                           for e in (m.endpoints if m else ()) if not e.is_call})

    # ----- reload (orchestrated by the reloader: this is what a new version means for the pools)
    async def reload(self, reason: str = "reload requested") -> bool:
        """Load every app file again and roll its pools to the new version; True if all of it serves."""
        results = await asyncio.gather(*(app.reloader.reload(reason) for app in self.apps))
        return all(results)

    async def _apply_manifest(self, app: ServedApp, manifest: AppManifest) -> tuple[list[str], int]:
        """Serve a manifest of `app` that loads: roll every pool of it that stays, start new ones, stop
        the rest (another app's pools are not touched). Returns why pools kept their previous version,
        and the generation now served."""
        self.generation += 1
        manifest = app.manifest = self._claim(app, manifest)  # so that new replicas learn the new URLs
        self._tell_network(manifest)
        for pool in self.pools.values():
            if app.owns_pool(pool.spec.name):
                pool.extra_env.update(self._replica_env(app))
        new = {spec.name: spec for spec in manifest.pools()}
        removed: list[Pool] = []
        rolling: list[tuple[Pool, PoolSpec, Autoscaler]] = []
        for name, group in list(self.groups.items()):
            if not app.owns_pool(name):
                continue
            spec = new.get(name)
            if spec is None or bool(spec.parameters) != group.parametrized:
                removed += group.pools()  # gone, or it became (or stopped being) parametrized
                del self.groups[name]
                continue
            # From here a request for a new set of values is checked against the new parameters; a set
            # lives on if its values still fit them.
            group.spec, group.limit = spec, caps.max_sets(spec, self._own_network)
            for key, pool in list(group.sets.items()):
                if group.fits(pool.variant.values if pool.variant else {}):
                    rolling.append((pool, spec, group.scalers[key]))
                else:
                    removed.append(group.remove(key))
        results = await asyncio.gather(
            *(p.close() for p in removed),
            *(pool.rollout(spec, self.generation) for pool, spec, _ in rolling),
        )
        for pool, _, scaler in rolling:
            scaler.reconfigure(self._scaling(pool.spec))
        self.snapshots.sweep(rolled_out=True)  # the old generation's, once no replica of it is left
        for name, spec in new.items():
            group = self.groups.get(name)
            if group is None:
                self._add_group(spec)
            elif not group.sets and (values := group.default_values()) is not None:
                self._add_set(group, values)  # every set was dropped: start the default one warm
        self._order_groups()
        self._publish_routes()
        self.scheduler.update(self._endpoints())
        return [r for r in results if isinstance(r, str)], self.generation

    def _snapshot_log(self, group: str, line: str) -> None:
        self._emit(LogLine(group if group in self.pools else ENGINE_LOG, f"{group}.snapshot", line, time.time()))

    def _say(self, text: str) -> None:
        self._emit(LogLine(ENGINE_LOG, "mwtui", text, time.time()))

    def _notify(self) -> None:
        self._publish_status()
        self.hub.publish(PoolChanged(""))

    async def close(self) -> None:
        """Drain and stop: replicas finish their in-flight requests (the gateway stays up meanwhile)."""
        if self._closed:
            return
        self._closed = True
        for app in self.apps:
            app.reloader.close()
        await self.scheduler.close()
        if self._status_task:
            self._status_task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)  # pools of parameter sets closing
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
        await self.snapshots.close()
        await self.spawner.close()
        await self.gateway.close()
        self.lifeline.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def wait_ready(self, timeout: float = 30.0) -> bool:
        """Until every pool has settled (running, failed or stopped); True if all are running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [p.state for p in self.pools.values()]
            if all(s in ("running", "failed", "stopped", "idle") for s in states):
                return all(s == "running" for s in states)
            await asyncio.sleep(0.05)
        return False

    # ----- subscriptions
    def pool_brief(self, pool: str) -> PoolBrief | None:
        """What a `PoolChanged` for `pool` is about now; None once the pool is gone."""
        p = self.pools.get(pool)
        return None if p is None else PoolBrief(p.state, tuple(s.name for s in routed(p)))

    def log_lines(self, pool: str, with_engine: bool = True) -> list[LogLine]:
        """The kept log lines of `pool`, mwtui's own among them (see EventHub.lines)."""
        return self.hub.lines(pool, with_engine)

    @property
    def logs(self) -> dict[str, deque[LogLine]]:
        return self.hub.logs

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self.hub.subscribe(listener)

    def _emit(self, event: Event) -> None:
        if isinstance(event, PoolChanged):
            for app in self.apps:
                app.reloader.activity()  # a replica started, became ready or ended
            self._publish_routes()
        self.hub.publish(event)

    # ----- commands (by endpoint name; a class's endpoints share one pool)
    def endpoint_spec(self, name: str) -> EndpointSpec | None:
        """The spec of the version being served, under the name the gateway routes it by (a parameter
        set's endpoint `Greeter.greet?name=ann` has `pool` set to its own pool's name)."""
        for pool in self.pools.values():
            for spec in routed(pool):
                if spec.name == name:
                    return spec
        for group in self.groups.values():
            for spec in group.spec.endpoints if group.parametrized else ():
                if spec.name == name:
                    return spec
        return None

    def _group_of(self, endpoint: str) -> tuple[PoolGroup, list[Pool], bool]:
        """The group of `endpoint`, the pools serving it, and whether that is the whole group: one set's
        endpoint (`Greeter.greet?name=ann`) is served by its own pool, any other by every pool of it."""
        spec = self.endpoint_spec(endpoint)
        group = self.groups.get(spec.pool.partition("?")[0]) if spec is not None else None
        if spec is None or group is None:
            raise KeyError(f"no endpoint named {endpoint!r}")
        if group.parametrized and spec.pool != group.name:
            return group, [p for p in group.pools() if p.name == spec.pool], False
        return group, group.pools(), True

    def _pools_of(self, endpoint: str) -> list[Pool]:
        return self._group_of(endpoint)[1]

    def stop_endpoint(self, name: str) -> None:
        group, pools, whole = self._group_of(name)
        group.stopped = group.stopped or whole  # a set asked for meanwhile starts stopped too
        for pool in pools:
            pool.pause()
        self._publish_routes()

    def start_endpoint(self, name: str) -> None:
        group, pools, whole = self._group_of(name)
        group.stopped = group.stopped and not whole
        for pool in pools:
            pool.resume()
        self._publish_routes()

    async def restart_endpoint(self, name: str) -> str | None:
        """Rolling restart of the endpoint's pool (or pools); returns why it failed, if it did."""
        results = await asyncio.gather(*(pool.restart() for pool in self._pools_of(name)))
        return next((r for r in results if r), None)

    def scale(self, name: str, replicas: int) -> int:
        """Pin the endpoint's pool at `replicas` until `unpin(name)`, never past its cap (max_containers,
        --max-replicas, one fixed port of the host's); returns the count pinned."""
        pinned = max(0, replicas)
        for pool in self._pools_of(name):
            top = self._cap(pool.spec)[0]
            pinned = max(0, replicas if top is None else min(replicas, top))
            pool.scale(pinned)
        return pinned

    def unpin(self, name: str) -> None:
        """Hand the pool back to the autoscaler."""
        for pool in self._pools_of(name):
            pool.unpin()

    # ----- gateway
    def _on_gateway_event(self, msg: dict[str, Any]) -> None:
        try:
            self._handle_gateway_event(msg)
        except Exception:  # noqa: BLE001 - our bug must not stop the events that follow (metrics, wakes)
            self._say(f"internal error handling the gateway's {msg.get('type')!r} event:\n{traceback.format_exc()}")

    def _handle_gateway_event(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "metrics":
            self._metrics = msg.get("endpoints", {})
            self._on_metrics(time.time())
        elif kind == "access":
            for line in access_lines(msg, self.endpoint_spec, self.callers):
                self._emit(line)
        elif kind == "ports":
            for warning in msg.get("warnings", []):
                self._emit(LogLine(ENGINE_LOG, "gateway", warning, time.time()))
        elif kind == "wake":
            # A request waits at a pool with no replica: count it as in flight right away.
            if "parent" in msg:
                self._wake_variant(msg)
            spec = self.endpoint_spec(msg.get("endpoint", ""))
            if spec is not None:
                m = self._metrics.setdefault(spec.name, {})
                m["inflight"] = max(int(m.get("inflight", 0)), int(msg.get("queued", 1)))
                self._autoscale(time.monotonic())

    def _wake_variant(self, msg: dict[str, Any]) -> None:
        """A request asks for a set of class parameters: give it a pool if it has none."""
        parent = self.endpoint_spec(str(msg.get("parent")))
        values = msg.get("values")
        group = self.groups.get(parent.pool) if parent is not None else None
        if group is None or not group.parametrized or not isinstance(values, dict):
            return
        if not group.fits(values):
            return  # the gateway checked them against routes older than the file now served
        if self._add_set(group, values) is not None:
            self._publish_routes()

    def _on_metrics(self, now: float) -> None:
        """Per-replica load from the gateway (for choosing which replica to stop first)."""
        per_replica: dict[str, int] = {}
        for m in self._metrics.values():
            for rid, u in (m.get("upstreams") or {}).items():
                per_replica[rid] = per_replica.get(rid, 0) + int(u.get("inflight", 0))
        for pool in self.pools.values():
            pool.note_load(per_replica, now)
        self._autoscale(time.monotonic())

    def _autoscale(self, now: float) -> None:
        """Feed each pool's load to its autoscaler and apply what it decides, unless pinned by hand."""
        for group in self.groups.values():
            group.autoscale(now, self._metrics)
        self._reap_sets()

    # ----- the request inspector (kept by the gateway: see gateway/inspector.py)
    async def requests(self, endpoint: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The newest requests through the gateway (of `endpoint`, else of every one), newest first."""
        query = urlencode({"limit": limit, **({"endpoint": endpoint} if endpoint else {})})
        status, body = await self.gateway.ask("GET", f"/api/requests?{query}")
        return body if status == 200 and isinstance(body, list) else []

    async def replay_request(self, request_id: int) -> dict[str, Any]:
        """Send a kept request again through the gateway; {"id", "replay_of", "status"}, or {"error"}."""
        status, body = await self.gateway.ask("POST", f"/api/requests/{request_id}/replay", timeout=330.0)
        if status == 200 and isinstance(body, dict):
            return body
        return {"error": body if isinstance(body, str) and body else f"the gateway answered {status}"}

    def _publish_routes(self) -> None:
        if self.gateway.proc is None:
            return
        self.gateway.send_routes(route_table.routes(self.groups.values(), self._own_port))
        self._publish_status()  # so /api/endpoints never lags behind what is routed

    def _own_port(self, endpoint: str) -> int | None:
        """The endpoint's own port on the gateway (the same for the same file and endpoint), if asked."""
        return stable_port(self._app_of(endpoint).ref.path, local_name(endpoint)) if self.own_ports else None

    def _publish_status(self) -> None:
        snap = self.snapshot()
        self.gateway.send({"type": "status", "endpoints": [e.to_json() for e in snap.endpoints],
                           "app": snap.app_json()})

    async def _status_loop(self) -> None:
        while True:
            try:
                children = process_children()
                for pool in self.pools.values():
                    for r in pool.replicas:
                        r.sample(children)
                self.snapshots.sample()
                self._memory_total = tree_pss(os.getpid(), children)  # the whole of mwtui, shared pages once
                self._publish_status()
                for app in self.apps:
                    app.reloader.expire()
            except Exception:  # noqa: BLE001 - a bug here must not freeze the status for good
                self._say(f"internal error sampling replicas:\n{traceback.format_exc()}")
            await asyncio.sleep(1.0)

    # ----- snapshots
    def _rows(self) -> RowMaker:
        return RowMaker(self.gateway.port, self.gateway.endpoint_ports, self._metrics, self.load_error,
                        self.generation, self._cap, self.snapshots.state,
                        lambda pool: self._app_of(pool).name, self.callers.recent, self.scheduler.next_run)

    def snapshot(self) -> Snapshot:
        reloaders = [app.reloader for app in self.apps]
        states = {r.state for r in reloaders}
        state = next((s for s in ("reloading", "error", "watching") if s in states), "off")
        times = [r.last_ms for r in reloaders if r.last_ms is not None]
        reload = ReloadStatus(
            self.reload_enabled, state, self.generation, times[-1] if times else None, sum(r.reloads for r in reloaders),
            tuple(sorted(set().union(*(r.guard.silenced for r in reloaders)))),
        )
        common = {"gateway_url": self.gateway.base_url, "reload": reload, "error": self.load_error,
                  "mode": self.mode[0], "mode_why": self.mode[1], "network": self.network[0],
                  "network_why": self.network[1], "apps": tuple((a.name, a.ref.path) for a in self.apps),
                  "memory_bytes": self._memory_total}
        warnings = tuple(w for a in self.apps if a.manifest for w in (*a.manifest.warnings, *a.clash_messages))
        name = ", ".join(a.name for a in self.apps)
        if not any(a.manifest for a in self.apps):
            return Snapshot(app_name=name, file=self.ref.path, **common)
        out = self._rows().endpoints(self.groups.values(), time.time())
        return Snapshot(app_name=name, file=self.ref.path, endpoints=out, warnings=warnings, **common)

__all__ = ["AppRef", "Engine", "EndpointStatus", "GatewayError", "LoadFailed", "Snapshot", "label_url"]
