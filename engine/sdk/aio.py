"""Modal's methods are "synchronicity" wrappers: `obj.f(...)` blocks and `await obj.f.aio(...)` does not.

`@blocking` gives a plain method the same shape: called directly it runs in the caller's thread; its
`.aio` twin runs it in a worker thread so that an event loop is never blocked by the store or a wait.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any


class _Bound:
    def __init__(self, f: Callable[..., Any], obj: Any) -> None:
        self._f = f
        self._obj = obj
        functools.update_wrapper(self, f)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._f(self._obj, *args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._f, self._obj, *args, **kwargs)


class _BoundGen(_Bound):
    async def aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        it: Iterator[Any] = self._f(self._obj, *args, **kwargs)
        done = object()
        while (item := await asyncio.to_thread(next, it, done)) is not done:
            yield item


class blocking:  # noqa: N801 - used as a decorator
    """A method with an `.aio` twin. Generator methods get an async-iterator twin."""

    def __init__(self, f: Callable[..., Any], *, generator: bool = False) -> None:
        self._f = f
        self._generator = generator
        functools.update_wrapper(self, f)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return (_BoundGen if self._generator else _Bound)(self._f, obj)


def blocking_gen(f: Callable[..., Any]) -> blocking:
    return blocking(f, generator=True)
