"""Where a "remote" call goes under mwtui: to the target function's (or class's) own pool.

In a replica that mwtui's engine started, `.remote()`, `.spawn()`, `.map()` and their kin do not run the
function here: they send it, through the gateway, to the replicas of its own pool, which have its
environment, secrets, volumes and `@enter` state, its `timeout` and its autoscaling. A `CallRoute` is
the callable they run in its place (see `Invocable._remote_target`). Elsewhere (an app file run by
hand, a test) calls stay in process.

Retries follow Modal's client: a failed call (the function raised, or ran past its timeout) is sent
again after `initial_delay * backoff_coefficient ** (n - 1)` seconds, at most `max_delay`, until
`max_retries` are spent; an integer `retries=N` is `Retries(max_retries=N, backoff_coefficient=1.0,
initial_delay=1.0)`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..labels import call_label
from ..params import query_of
from ..replica_env import POOL as POOL_ENV
from . import calls, runtime
from .call_client import APP_ENV, call, not_found
from .call_wire import Call
from .exception import NotFoundError


def app_name_of(app: Any) -> str:
    """The name an app's pools are called by: its own, or (`App()` without one) the file's, which
    the engine gives its replicas."""
    return str(getattr(app, "name", None) or os.environ.get(APP_ENV, ""))


def retry_delays(retries: Any) -> Iterator[float]:
    """The pause before each retry of a failed call, as Modal's RetryManager computes them."""
    if retries is None:
        return
    if isinstance(retries, int):
        count, backoff, initial, top = retries, 1.0, 1.0, 60.0
    else:
        count = int(getattr(retries, "max_retries", 0))
        backoff = float(getattr(retries, "backoff_coefficient", 2.0))
        initial = float(getattr(retries, "initial_delay", 1.0))
        top = float(getattr(retries, "max_delay", 60.0))
    for n in range(1, count + 1):
        yield min(initial * backoff ** (n - 1), top)


@dataclass(frozen=True)
class CallRoute:
    app: str
    pool: str  # the function's or the class's name
    method: str | None = None  # a class's @modal.method
    params: Mapping[str, Any] = field(default_factory=dict)  # a parametrized class's values (JSON form)
    timeout_s: float | None = None  # the target's `timeout`, for FunctionTimeoutError's message
    retries: Any = None  # the target's `retries=`
    target_module: str = ""  # the module that defines the target, for the call graph ("" unknown)
    kind: str = "Function"  # "Cls" for a class's method: how a lookup that finds nothing names it

    @property
    def host(self) -> str:
        return call_label(self.app, self.pool) + ".localhost"

    def path(self) -> str:
        """`/from/<caller's pool>/<callee>`, plus a parametrized class's values as the query that
        picks their pool (as a web request's does)."""
        callee = f"{self.pool}.{self.method}" if self.method else self.pool
        query = f"?{query_of(self.params)}" if self.params else ""
        caller = os.environ.get(POOL_ENV) or runtime.pool_name() or "-"
        return f"/from/{quote(caller, safe='')}/{quote(callee, safe='')}{query}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inp = calls.current()  # the input this call is (run_remote, spawn and map set it)
        request = Call(self.method, args, kwargs, inp.input_id if inp else "", inp.function_call_id if inp else "",
                       bool(inp and inp.recorded), bool(inp and inp.spawned))
        try:
            for delay in retry_delays(self.retries):
                try:
                    return call(self.host, request, timeout_s=self.timeout_s, path=self.path())
                except NotFoundError:
                    raise  # nothing serves it: no retry helps
                except Exception:  # noqa: BLE001 - Modal retries what the function raised, and timeouts
                    time.sleep(delay)
            return call(self.host, request, timeout_s=self.timeout_s, path=self.path())
        except NotFoundError:
            raise not_found(self.kind, self.app, self.pool) from None
