"""`modal.Function`: a registered function, and the ways user code calls one.

Locally there are no remote containers, so `.remote()`, `.spawn()` and `.map()` run the function in the
calling process. Web functions refuse them with Modal's message, as Modal does once they have a URL.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .context import is_local
from .exception import ExecutionError, InvalidError, NotFoundError
from .model import Options, Source, WebConfig

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
    # Called from async code (a handler using .remote()): that loop is busy, so use a fresh one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, f(*args, **kwargs)).result()


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


class FunctionCall:
    """The handle `.spawn()` returns. The call has already run; `get()` gives its result or raises."""

    def __init__(self, object_id: str, result: Any = None, error: BaseException | None = None) -> None:
        self.object_id = object_id
        self._result = result
        self._error = error
        self.get = Invoker(self._get, self._get_aio)

    def _get(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._result

    async def _get_aio(self, timeout: float | None = None) -> Any:
        return self._get(timeout)

    def cancel(self, terminate_containers: bool = False) -> None:
        pass

    @staticmethod
    def from_id(function_call_id: str, **kwargs: Any) -> FunctionCall:
        raise NotFoundError(f"No function call with id {function_call_id!r} in this process")


class Invocable:
    """What Function and a class's bound method share: the call surface user code sees."""

    tag: str
    web: WebConfig | None
    _web_url: str | None

    def _target(self) -> Callable[..., Any]:
        raise NotImplementedError

    def _refuse_if_web(self, how: str) -> None:
        if self.web is None:
            return
        where = f"via its web url '{self._web_url}'" if self._web_url else "via its web url"
        raise InvalidError(
            f"A webhook function cannot be invoked for remote execution with `.{how}`. "
            f"Invoke this function {where} or call it locally: {self.tag}.local()"
        )

    def _setup_invokers(self) -> None:
        self.remote = Invoker(self._remote, self._remote_aio)
        self.spawn = Invoker(self._spawn, self._spawn_aio)
        self.remote_gen = Invoker(self._remote_gen, self._remote_gen_aio)
        self.map = Invoker(self._map, self._map_aio)
        self.starmap = Invoker(self._starmap, self._starmap_aio)
        self.for_each = Invoker(self._for_each, self._for_each_aio)
        self.spawn_map = Invoker(self._spawn_map, self._spawn_map_aio)

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_if_web("remote")
        return run_sync(self._target(), *args, **kwargs)

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_if_web("remote")
        return await run_async(self._target(), *args, **kwargs)

    def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        self._refuse_if_web("spawn")
        try:
            return FunctionCall(f"fc-local-{id(self):x}", result=run_sync(self._target(), *args, **kwargs))
        except Exception as e:  # noqa: BLE001 - delivered by .get(), as on Modal
            return FunctionCall(f"fc-local-{id(self):x}", error=e)

    async def _spawn_aio(self, *args: Any, **kwargs: Any) -> FunctionCall:
        self._refuse_if_web("spawn")
        try:
            return FunctionCall(f"fc-local-{id(self):x}", result=await run_async(self._target(), *args, **kwargs))
        except Exception as e:  # noqa: BLE001 - delivered by .get(), as on Modal
            return FunctionCall(f"fc-local-{id(self):x}", error=e)

    def _remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self._refuse_if_web("remote_gen")
        result = self._target()(*args, **kwargs)
        if inspect.isasyncgen(result):
            raise InvalidError("An async generator must be consumed with `.remote_gen.aio()`")
        yield from result

    async def _remote_gen_aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._refuse_if_web("remote_gen")
        result = self._target()(*args, **kwargs)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:
            for item in result:
                yield item

    def _map(
        self, *iterables: Iterable[Any], order_outputs: bool = True, return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[Any]:
        self._refuse_if_web("map")
        for args in zip(*iterables, strict=False):
            try:
                yield run_sync(self._target(), *args)
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e

    async def _map_aio(
        self, *iterables: Iterable[Any], order_outputs: bool = True, return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        self._refuse_if_web("map")
        for args in zip(*iterables, strict=False):
            try:
                yield await run_async(self._target(), *args)
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e

    def _starmap(self, input_iterator: Iterable[tuple[Any, ...]], *, kwargs: dict[str, Any] | None = None,
                 order_outputs: bool = True, return_exceptions: bool = False, **options: Any) -> Iterator[Any]:
        self._refuse_if_web("starmap")
        for args in input_iterator:
            try:
                yield run_sync(self._target(), *args, **(kwargs or {}))
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e

    async def _starmap_aio(self, input_iterator: Iterable[tuple[Any, ...]], *, kwargs: dict[str, Any] | None = None,
                           order_outputs: bool = True, return_exceptions: bool = False,
                           **options: Any) -> AsyncIterator[Any]:
        self._refuse_if_web("starmap")
        for args in input_iterator:
            try:
                yield await run_async(self._target(), *args, **(kwargs or {}))
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e

    def _for_each(self, *iterables: Iterable[Any], ignore_exceptions: bool = False, **kwargs: Any) -> None:
        for _ in self._map(*iterables, return_exceptions=ignore_exceptions):
            pass

    async def _for_each_aio(self, *iterables: Iterable[Any], ignore_exceptions: bool = False, **kwargs: Any) -> None:
        async for _ in self._map_aio(*iterables, return_exceptions=ignore_exceptions):
            pass

    def _spawn_map(self, *iterables: Iterable[Any], **kwargs: Any) -> None:
        self._refuse_if_web("spawn_map")
        for args in zip(*iterables, strict=False):
            self._spawn(*args)

    async def _spawn_map_aio(self, *iterables: Iterable[Any], **kwargs: Any) -> None:
        self._refuse_if_web("spawn_map")
        for args in zip(*iterables, strict=False):
            await self._spawn_aio(*args)

    def get_web_url(self) -> str | None:
        return self._web_url

    @property
    def web_url(self) -> str | None:
        return self._web_url


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
        self._web_url: str | None = None  # a replica may set the local URL here
        self._setup_invokers()

    def _target(self) -> Callable[..., Any]:
        return self.raw_f

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
    """`modal.Function.from_name(app, name)`: resolved on first use against the apps in this process."""

    web = None
    _web_url = None

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

    def _target(self) -> Callable[..., Any]:
        fn = self.resolve()
        fn._refuse_if_web("remote")
        return fn.raw_f

    def local(self, *args: Any, **kwargs: Any) -> Any:
        raise ExecutionError(
            "The definition for this Function is missing, so it is not possible to invoke it locally. "
            "If this function was retrieved via `Function.from_name`, "
            "you need to use one of the remote invocation methods instead."
        )

    def hydrate(self, client: Any = None) -> FunctionRef:
        self.resolve()
        return self

    def __repr__(self) -> str:
        return f"<modal.Function.from_name({self.app_name!r}, {self.tag!r})>"
