"""`modal.Function`: a registered function, and the ways user code calls one.

In a replica that mwtui started, `.remote()`, `.spawn()`, `.map()` and their kin send each call to the
function's own pool through the gateway (`call_route`). Elsewhere (the file run by hand) they run the
function in the calling process (see `calls`), with its own environment added first. Web functions
refuse them with Modal's message, as Modal does once they have a URL.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import call_client, calls, runtime
from .call_route import CallRoute, app_name_of
from .calls import FunctionCall, gather
from .context import is_local
from .exception import ExecutionError, InvalidError, NotFoundError
from .model import Options, Source, WebConfig

__all__ = ["Function", "FunctionCall", "FunctionRef", "Invocable", "Invoker", "gather"]

if TYPE_CHECKING:
    from .app import App


def source_of(obj: Any) -> Source:
    """Where a function or class is defined: the line of its first decorator, as Python counts it."""
    code = getattr(obj, "__code__", None)
    if code is not None:
        return Source(code.co_filename, code.co_firstlineno)
    try:
        return Source(inspect.getsourcefile(obj) or "", inspect.getsourcelines(obj)[1])
    except (TypeError, OSError):
        module = inspect.getmodule(obj)
        return Source(getattr(module, "__file__", "") or "", 0)


def run_sync(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call f and return its result, running it to completion if it is a coroutine function."""
    if not inspect.iscoroutinefunction(f):
        return f(*args, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(f(*args, **kwargs))
    # Called from async code (a handler using .remote()): that loop is busy, so use a fresh one. The
    # context goes along, so the function sees the input it serves (and its calls get it as parent).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(contextvars.copy_context().run, asyncio.run, f(*args, **kwargs)).result()


async def run_async(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(f):
        return await f(*args, **kwargs)
    return await asyncio.to_thread(f, *args, **kwargs)


class Invoker:
    """`.remote`, `.spawn`, ...: callable, with an `.aio` twin, as Modal's synchronicity wrappers are."""

    def __init__(self, sync: Callable[..., Any], aio: Callable[..., Any]) -> None:
        self._sync = sync
        self.aio = aio

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._sync(*args, **kwargs)


class Invocable:
    """What Function and a class's bound method share: the call surface user code sees."""

    tag: str
    web: WebConfig | None
    is_generator: bool = False

    def _target(self) -> Callable[..., Any]:
        raise NotImplementedError

    def _options(self) -> Options | None:
        """The function's own options (environment, mounts), applied before it runs "remotely"."""
        return None

    @property
    def _web_url(self) -> str | None:
        return runtime.web_url(self.tag) if self.web is not None else None

    def _refuse_if_web(self, how: str) -> None:
        if self.web is None:
            return
        url = self._web_url
        where = f"via its web url '{url}'" if url else "via its web url"
        raise InvalidError(
            f"A webhook function cannot be invoked for remote execution with `.{how}`. "
            f"Invoke this function {where} or call it locally: {self.tag}.local()"
        )

    def _check_generator(self, how: str) -> None:
        # Modal 1.6.4's messages (modal/_functions.py): `spawn` has its own, and starmap/for_each go
        # through `_map`, so they name `.map(...)`.
        if self.is_generator and how == "spawn":
            raise InvalidError("Cannot `spawn` a generator function.")
        if self.is_generator and how in ("map", "starmap", "for_each", "spawn_map"):
            raise InvalidError(
                f"A generator function cannot be called with `.{'spawn_map' if how == 'spawn_map' else 'map'}(...)`."
            )
        if self.is_generator and how != "remote_gen":
            raise InvalidError(
                f"A generator function cannot be called with `.{how}(...)`. Use `.remote_gen(...)` instead."
            )
        if not self.is_generator and how == "remote_gen":
            raise InvalidError(
                "A non-generator function cannot be called with `.remote_gen(...)`. Use `.remote(...)` instead."
            )

    def _call_route(self) -> CallRoute | None:
        """Where its "remote" calls go under mwtui (its own pool); None: they run in this process."""
        return None

    def _remote_target(self, how: str) -> Callable[..., Any]:
        """The callable a "remote" call runs, once the checks pass: a call to its own pool under mwtui,
        else the function itself, here, its environment put in place first."""
        self._refuse_if_web(how)
        self._check_generator(how)
        route = self._call_route() if call_client.available() else None
        if route is not None:
            return route
        options = self._options()
        if options is not None:
            runtime.prepare_call(self.tag, options)
        return self._target()

    def _setup_invokers(self) -> None:
        self.remote = Invoker(self._remote, self._remote_aio)
        self.spawn = Invoker(self._spawn, self._spawn_aio)
        self.remote_gen = Invoker(self._remote_gen, self._remote_gen_aio)
        self.map = Invoker(self._map, self._map_aio)
        self.starmap = Invoker(self._starmap, self._starmap_aio)
        self.for_each = Invoker(self._for_each, self._for_each_aio)
        self.spawn_map = Invoker(self._spawn_map, self._spawn_map_aio)

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        return calls.run_remote(self.tag, self._remote_target("remote"), args, kwargs)

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        return await calls.run_remote_aio(self.tag, self._remote_target("remote"), args, kwargs)

    def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        return calls.spawn(self.tag, self._remote_target("spawn"), args, kwargs)

    async def _spawn_aio(self, *args: Any, **kwargs: Any) -> FunctionCall:
        return self._spawn(*args, **kwargs)

    def _remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        result = self._remote_target("remote_gen")(*args, **kwargs)
        if inspect.isasyncgen(result):
            raise InvalidError("An async generator must be consumed with `.remote_gen.aio()`")
        yield from result

    async def _remote_gen_aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        result = self._remote_target("remote_gen")(*args, **kwargs)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:
            for item in result:
                yield item

    def _many(self, how: str, inputs: Iterable[tuple[tuple[Any, ...], dict[str, Any]]], order_outputs: bool,
              return_exceptions: bool) -> Iterator[Any]:
        target = self._remote_target(how)
        return calls.run_many(
            lambda *a, **k: run_sync(target, *a, **k), inputs, ordered=order_outputs,
            return_exceptions=return_exceptions,
        )

    def _map(
        self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None, order_outputs: bool = True,
        return_exceptions: bool = False, wrap_returned_exceptions: bool = True,
    ) -> Iterator[Any]:
        inputs = ((args, dict(kwargs or {})) for args in zip(*input_iterators, strict=False))
        return self._many("map", inputs, order_outputs, return_exceptions)

    def _map_aio(self, *input_iterators: Iterable[Any], **options: Any) -> AsyncIterator[Any]:
        return _aiter_in_thread(self._map(*input_iterators, **options))

    def _starmap(self, input_iterator: Iterable[tuple[Any, ...]], *, kwargs: dict[str, Any] | None = None,
                 order_outputs: bool = True, return_exceptions: bool = False,
                 wrap_returned_exceptions: bool = True) -> Iterator[Any]:
        inputs = ((tuple(args), dict(kwargs or {})) for args in input_iterator)
        return self._many("starmap", inputs, order_outputs, return_exceptions)

    def _starmap_aio(self, input_iterator: Iterable[tuple[Any, ...]], **options: Any) -> AsyncIterator[Any]:
        return _aiter_in_thread(self._starmap(input_iterator, **options))

    def _for_each(self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None,
                  ignore_exceptions: bool = False) -> None:
        for _ in self._map(*input_iterators, kwargs=kwargs, return_exceptions=ignore_exceptions):
            pass

    async def _for_each_aio(self, *input_iterators: Iterable[Any], **options: Any) -> None:
        await asyncio.to_thread(self._for_each, *input_iterators, **options)

    def _spawn_map(self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None) -> None:
        target = self._remote_target("spawn_map")
        for args in zip(*input_iterators, strict=False):
            calls.spawn(self.tag, target, tuple(args), dict(kwargs or {}))

    async def _spawn_map_aio(self, *input_iterators: Iterable[Any], **options: Any) -> None:
        self._spawn_map(*input_iterators, **options)

    def get_web_url(self) -> str | None:
        """The local URL the gateway serves this endpoint at (None for a function that is not one)."""
        return self._web_url

    @property
    def web_url(self) -> str | None:
        return self._web_url


async def _aiter_in_thread(it: Iterator[Any]) -> AsyncIterator[Any]:
    done = object()
    while (item := await asyncio.to_thread(next, it, done)) is not done:
        yield item


class Function(Invocable):
    """A function registered with `@app.function`. Web functions are served; others can be called."""

    def __init__(
        self,
        app: App,
        tag: str,
        raw_f: Callable[..., Any],
        web: WebConfig | None,
        options: Options,
        *,
        is_generator: bool = False,
        schedule: Any = None,
    ) -> None:
        self.app = app
        self.tag = tag
        self.raw_f = raw_f
        self.web = web
        self.options = options
        self.is_generator = is_generator
        self.schedule = schedule
        self.source = source_of(raw_f)
        self._setup_invokers()

    def _target(self) -> Callable[..., Any]:
        return self.raw_f

    def _options(self) -> Options | None:
        return self.options

    def _call_route(self) -> CallRoute | None:
        return CallRoute(app_name_of(self.app), self.tag, timeout_s=self.options.timeout,
                         retries=self.options.extra.get("retries"), target_module=self.raw_f.__module__)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the Python function directly (an async one returns its coroutine), as Modal does."""
        if is_local() and self.options.volumes:
            warnings.warn(
                f"The {self.tag} function is executing locally and will not have access to the mounted Volume "
                "or NetworkFileSystem data",
                stacklevel=2,
            )
        return self.raw_f(*args, **kwargs)

    @property
    def object_id(self) -> str:
        return f"fu-local-{self.tag}"

    def hydrate(self, client: Any = None) -> Function:
        return self

    def with_options(self, **kwargs: Any) -> Function:
        return self

    def with_concurrency(self, **kwargs: Any) -> Function:
        return self

    def with_batching(self, **kwargs: Any) -> Function:
        return self

    def update_autoscaler(self, **kwargs: Any) -> None:
        pass

    @staticmethod
    def from_name(app_name: str, name: str, **kwargs: Any) -> FunctionRef:
        return FunctionRef(app_name, name)

    def __repr__(self) -> str:
        return f"<modal.Function {self.tag}>"


class FunctionRef(Invocable):
    """`modal.Function.from_name(app, name)`. In a replica that mwtui started, its calls go to that app's
    pool of it, whichever app file mwtui serves it from; elsewhere it is resolved against the apps in
    this process."""

    web = None

    def __init__(self, app_name: str, name: str) -> None:
        self.app_name = app_name
        self.tag = name
        self._setup_invokers()

    def resolve(self) -> Function:
        from .app import App

        for app in App._all_apps:
            if app.name == self.app_name and self.tag in app._functions:
                return app._functions[self.tag]
        raise NotFoundError(
            f"Lookup failed for Function '{self.tag}' from the '{self.app_name}' app: "
            "no such app or function is defined in this process."
        )

    def _remote_target(self, how: str) -> Callable[..., Any]:
        if call_client.available():
            return CallRoute(self.app_name, self.tag)
        return self.resolve()._remote_target(how)

    def get_web_url(self) -> str | None:
        return self.resolve().get_web_url()

    @property
    def web_url(self) -> str | None:
        return self.resolve().get_web_url()

    def local(self, *args: Any, **kwargs: Any) -> Any:
        raise ExecutionError(
            "The definition for this Function is missing, so it is not possible to invoke it locally. "
            "If this function was retrieved via `Function.from_name`, "
            "you need to use one of the remote invocation methods instead."
        )

    def hydrate(self, client: Any = None) -> FunctionRef:
        if call_client.available():  # any app mwtui serves, this file's or another's
            if call_client.served(self.app_name, self.tag) != (True, True):
                raise call_client.not_found("Function", self.app_name, self.tag)
            return self
        self.resolve()
        return self

    def __repr__(self) -> str:
        return f"<modal.Function.from_name({self.app_name!r}, {self.tag!r})>"
