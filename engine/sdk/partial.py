"""Modal's method-level decorators: the web decorators, lifecycle hooks, `method`, `concurrent`.

Each returns a `PartialFunction` that records what was asked; `@app.function` and `@app.cls` turn
those records into registrations. Checks run when the decorator is applied, with Modal's messages.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .exception import InvalidError
from .model import WebConfig


@dataclass
class PartialFunction:
    raw_f: Callable[..., Any]
    web: WebConfig | None = None
    enter: bool = False
    snap: bool = False
    exit: bool = False
    is_method: bool = False
    concurrency: dict[str, int | None] = field(default_factory=dict)
    batched: dict[str, int] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # Used as an attribute of an instance, behave like the plain method it wraps.
        if obj is None:
            return self
        return self.raw_f.__get__(obj, objtype)


def _unwrap(f: Any, decorator: str) -> PartialFunction:
    from .app import Cls, Function  # late: app imports this module

    if isinstance(f, (Function, Cls)):
        what = "@app.cls" if isinstance(f, Cls) else "@app.function"
        raise InvalidError(
            f"Cannot stack `@modal.{decorator}` on top of `{what}`. Hint: swap the order of the decorators."
        )
    if isinstance(f, PartialFunction):
        return f
    if inspect.isclass(f):
        raise InvalidError(
            f"Cannot apply `@modal.{decorator}` to a class. Hint: consider applying to a method instead."
        )
    if not callable(f):
        raise InvalidError(f"The object wrapped by `@modal.{decorator}` must be callable.")
    return PartialFunction(f)


def _domains(custom_domains: Iterable[str] | None) -> tuple[str, ...]:
    if custom_domains is None:
        return ()
    assert not isinstance(custom_domains, str), (
        "custom_domains must be `Iterable[str]` but is `str` instead."
    )
    return tuple(custom_domains)


def _web(config: WebConfig) -> Callable[[Any], PartialFunction]:
    def wrapper(f: Any) -> PartialFunction:
        pf = _unwrap(f, config.decorator)
        if pf.web is not None:
            raise InvalidError("Cannot set `webhook_config` twice.")
        if pf.is_method:
            raise InvalidError("Callable decorators cannot be combined with web interface decorators.")
        if pf.enter or pf.exit:
            raise InvalidError("Interface decorators cannot be combined with lifecycle decorators.")
        if config.kind in ("asgi", "wsgi", "web_server"):
            raw = pf.raw_f
            if inspect.iscoroutinefunction(raw):
                raise InvalidError(
                    f"The `@modal.{config.decorator}` decorator can't be applied to an async function."
                )
            if _has_non_self_params(raw):
                raise InvalidError(f"Functions decorated by `@modal.{config.decorator}` can't have parameters.")
        pf.web = config
        return pf

    return wrapper


def _has_non_self_params(f: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return False
    return any(p.name != "self" for p in params)


def fastapi_endpoint(
    *,
    method: str = "GET",
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    return _web(
        WebConfig("fastapi", "fastapi_endpoint", method, label, docs, requires_proxy_auth, _domains(custom_domains))
    )


def web_endpoint(
    *,
    method: str = "GET",
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    """The old name of `fastapi_endpoint`. The seed keeps it working, with a warning."""
    import warnings

    from .exception import DeprecationError

    warnings.warn(
        "2025-03-05: The `@modal.web_endpoint` decorator has been renamed to `@modal.fastapi_endpoint`.",
        DeprecationError,
        stacklevel=2,
    )
    return _web(
        WebConfig("fastapi", "web_endpoint", method, label, docs, requires_proxy_auth, _domains(custom_domains))
    )


def asgi_app(
    *,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    return _web(WebConfig("asgi", "asgi_app", "", label, False, requires_proxy_auth, _domains(custom_domains)))


def wsgi_app(
    *,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    return _web(WebConfig("wsgi", "wsgi_app", "", label, False, requires_proxy_auth, _domains(custom_domains)))


def web_server(
    port: int,
    *,
    startup_timeout: float = 5.0,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Callable[[Any], PartialFunction]:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError("First argument of `@web_server` must be a local port, such as `@web_server(8000)`.")
    if startup_timeout <= 0:
        raise InvalidError("The `startup_timeout` argument of `@web_server` must be positive.")
    return _web(
        replace(
            WebConfig("web_server", "web_server", "", label, False, requires_proxy_auth, _domains(custom_domains)),
            port=port,
            startup_timeout=float(startup_timeout),
        )
    )


def _lifecycle(name: str, **flags: bool) -> Callable[[Any], PartialFunction]:
    def wrapper(f: Any) -> PartialFunction:
        pf = _unwrap(f, name)
        if pf.web is not None or pf.is_method:
            raise InvalidError("Interface decorators cannot be combined with lifecycle decorators.")
        for k, v in flags.items():
            setattr(pf, k, v)
        return pf

    return wrapper


def enter(*, snap: bool = False) -> Callable[[Any], PartialFunction]:
    return _lifecycle("enter", enter=True, snap=snap)


def exit() -> Callable[[Any], PartialFunction]:  # noqa: A001 - Modal's own name
    return _lifecycle("exit", exit=True)


def method(*, is_generator: bool | None = None) -> Callable[[Any], PartialFunction]:
    def wrapper(f: Any) -> PartialFunction:
        pf = _unwrap(f, "method")
        if pf.web is not None:
            raise InvalidError("Callable decorators cannot be combined with web interface decorators.")
        if pf.enter or pf.exit:
            raise InvalidError("Interface decorators cannot be combined with lifecycle decorators.")
        pf.is_method = True
        return pf

    return wrapper


def concurrent(
    _f: Any = None, *, max_inputs: int | None = None, target_inputs: int | None = None
) -> Callable[[Any], Any]:
    """Inputs per replica. On a class it marks the class; on a function it merges into its record."""
    if _f is not None:
        raise TypeError("concurrent() takes 0 positional arguments but 1 was given")
    if max_inputs is not None and target_inputs is not None and target_inputs > max_inputs:
        raise InvalidError("`target_inputs` parameter cannot be greater than `max_inputs`.")
    config = {"max_inputs": max_inputs, "target_inputs": target_inputs}

    def wrapper(f: Any) -> Any:
        if inspect.isclass(f):
            f.__mwtui_concurrency__ = config
            return f
        pf = _unwrap(f, "concurrent")
        pf.concurrency = config
        return pf

    return wrapper
