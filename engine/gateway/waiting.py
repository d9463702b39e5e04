"""Requests waiting for a replica: none is ready yet (a pool at zero, a start), or every one is at its
`max_inputs`. Each endpoint has a queue in arrival order; a freed slot or new routes send the oldest on,
and a request that waits past its bound gets a 503 that says why.
"""

from __future__ import annotations

from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from . import pages
from .proxy import Exchange, log_bug
from .routes import Endpoint

if TYPE_CHECKING:
    from .server import Gateway
    from .upstream import UpstreamPool

RETRY_AFTER: Final = b"retry-after: 5\r\n"


class Waiting:
    """The gateway's waiting requests. Entries that stopped waiting (answered, client gone) stay in
    their queue until reached and are skipped then; `count` counts the live ones, so that the hot path
    asks one integer whether anybody waits at all."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.queues: dict[str, deque[Exchange]] = {}
        self.count = 0

    def enqueue(self, ex: Exchange, ep: Endpoint) -> None:
        gw = self.gw
        stats = ep.stats
        if stats.queued >= gw.limits.max_queue:
            ex.reply(503, pages.queue_full(ep.name, stats.queued), extra=RETRY_AFTER)
            return
        queue = self.queues.get(ep.name)
        if queue is None:
            queue = self.queues[ep.name] = deque()
        elif len(queue) > 2 * stats.queued + 64:
            self.queues[ep.name] = queue = deque(x for x in queue if x.waiting)  # drop the dead
        queue.append(ex)
        ex.waiting = True
        cap = ex.cap
        if cap is not None:
            cap.queued = True
            cap.woke = cap.woke or not ep.upstreams
        stats.queued += 1
        self.count += 1
        loop = gw.loop
        ex.timer = loop.call_later(wait_bound(ep), self._expired, ex, loop.time())
        if not ep.upstreams and gw.control is not None and stats.queued & (stats.queued - 1) == 0:
            # A pool at zero: tell the engine now rather than at the next metrics tick, so that its
            # autoscaler starts a replica half a second sooner (at 1, 2, 4, 8... waiting: a burst
            # is seen growing without one event per request).
            msg: dict[str, Any] = {"type": "wake", "endpoint": ep.name, "queued": stats.queued}
            if ep.parent is not None:  # a parameter set the engine may not have a pool for yet
                msg["parent"], msg["values"] = ep.parent, ep.values
            gw.control.emit(msg)

    def unwait(self, ex: Exchange) -> None:
        ex.waiting = False
        self.count -= 1
        ep = ex.ep
        if ep is not None:
            ep.stats.queued -= 1
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None

    def _expired(self, ex: Exchange, since: float) -> None:
        ex.timer = None
        if ex.done or not ex.waiting:
            return
        try:
            assert ex.ep is not None
            loop = self.gw.loop
            ep = self.gw.table.endpoints.get(ex.ep.name, ex.ep)
            waited = loop.time() - since
            left = wait_bound(ep) - waited
            if left > 0.01:  # the endpoint changed meanwhile (replicas arrived, all busy): wait on
                ex.timer = loop.call_later(left, self._expired, ex, since)
                return
            if ep.upstreams:
                body = pages.all_busy(ep.name, len(ep.upstreams), ep.max_inputs, round(waited, 1))
            else:
                body = pages.not_ready(ep.name, ep.state, round(waited, 1))
            ex.reply(503, body, extra=RETRY_AFTER)
        except Exception:
            log_bug("answering a request that waited too long")

    def slot_freed(self, pool: UpstreamPool) -> None:
        for name in pool.endpoints:
            if name in self.queues:
                self.dispatch(name)

    def dispatch(self, name: str) -> None:
        """Hand waiting requests of `name`, oldest first, to replicas with a free slot."""
        queue = self.queues.get(name)
        ep = self.gw.table.endpoints.get(name)
        if queue is None or ep is None:
            return
        while queue:
            ex = queue[0]
            if not ex.waiting or ex.done:
                queue.popleft()
                continue
            up = ep.pick()
            if up is None:
                break
            queue.popleft()
            self.unwait(ex)
            ex.ep = ep  # the table may be newer than the one it arrived under
            ex.t_run = perf_counter()
            try:
                ex.attach(up)
            except Exception:
                log_bug("sending a waiting request to a replica")
        if not queue and self.queues.get(name) is queue:
            del self.queues[name]

    def release(self) -> None:
        """After new routes: answer the waiting requests that can no longer be served, send on the
        ones that now can; the rest keep waiting (their bound is checked again when it runs out)."""
        table = self.gw.table
        for name in list(self.queues):
            ep = table.endpoints.get(name)
            if ep is not None and ep.state != "stopped" and (ep.upstreams or ep.state != "failed"):
                self.dispatch(name)
                continue
            queue = self.queues.pop(name)
            for ex in queue:
                if ex.done or not ex.waiting:
                    continue
                self.unwait(ex)
                if ep is None and "?" in name:
                    ex.reply(503, pages.variant_gone(name))
                elif ep is None:
                    ex.reply(503, f"mwtui: endpoint {name} is no longer part of the app\n".encode())
                elif ep.state == "stopped":
                    ex.reply(503, pages.stopped(name))
                else:
                    ex.reply(503, pages.failed(name, self.gw.last_error(ex, name)))


def wait_bound(ep: Endpoint) -> float:
    """How long a request may wait: the startup budget while no replica is ready; while all are
    busy, also the function's own timeout (by then a running request ended or got its 504)."""
    return ep.hold_s if not ep.upstreams else max(ep.hold_s, ep.timeout)
