"""One way for tests to wait for something that happens asynchronously: poll a predicate until it
returns a truthy value, or fail naming what was awaited and the last thing seen.

Timeouts are upper bounds for slow machines, never asserted thresholds: a test that passes does so as
soon as the condition holds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

# Short enough that a wait costs little beyond the event itself; long enough not to spin.
POLL_S = 0.02


Describe = str | Callable[[], str]


def _failure(what: Describe, timeout: float, last: object) -> AssertionError:
    if callable(what):  # built at failure, so it can show state (output so far) as of the timeout
        what = what()
    shown = repr(last)
    if len(shown) > 2000:  # a whole status table or log is noise past its start
        shown = shown[:2000] + "..."
    return AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {shown}")


def eventually(
    predicate: Callable[[], T | None],
    timeout: float,
    what: Describe,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    interval: float = POLL_S,
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    `what` names the awaited condition in the failure; it may be a function, called only on failure, to
    add context the predicate does not return (say, the output so far).

    Exceptions of the types in `retry_on` count as "not yet" (and are reported if the wait times out);
    any other exception fails the test at once, as it would outside a wait."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except retry_on as e:
            last = e
        else:
            if value:
                return value
            last = value
        # Checked after the call, so the predicate always gets a look after the deadline's sleep.
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        time.sleep(interval)


# Two signatures, so that a type checker infers T from an async predicate's result too.
@overload
async def eventually_async(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: Describe,
    *,
    retry_on: tuple[type[BaseException], ...] = ...,
    interval: float = ...,
    pause: Callable[[], Awaitable[object]] | None = ...,
) -> T: ...


@overload
async def eventually_async(
    predicate: Callable[[], T | None],
    timeout: float,
    what: Describe,
    *,
    retry_on: tuple[type[BaseException], ...] = ...,
    interval: float = ...,
    pause: Callable[[], Awaitable[object]] | None = ...,
) -> T: ...


async def eventually_async(
    predicate: Callable[[], object],
    timeout: float,
    what: Describe,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    interval: float = POLL_S,
    pause: Callable[[], Awaitable[object]] | None = None,
) -> object:
    """As `eventually`, sleeping on the event loop; `predicate` may be sync or return an awaitable.

    `pause` replaces the sleep between polls (a Textual pilot's pause also lets the screen catch up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as e:
            last = e
        else:
            if value:
                return value
            last = value
        if loop.time() >= deadline:
            raise _failure(what, timeout, last)
        await (pause() if pause is not None else asyncio.sleep(interval))
