"""Modal's method-level decorators: the web decorators, lifecycle hooks, `method`, `concurrent`, `batched`.

Each returns a `PartialFunction` that records what was asked; `@app.function` and `@app.cls` turn
those records into registrations. Checks run when the decorator is applied, with Modal's messages.

The factories are named `_fastapi_endpoint`, `_enter`, ... and exported without the underscore, as in
Modal 1.6.4: a missing pair of parentheses then fails with the same plain TypeError, e.g.
"_fastapi_endpoint() takes 0 positional arguments but 1 was given".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .deprecation import deprecation_warning
from .exception import InvalidError
from .model import WebConfig

MAX_MAX_BATCH_SIZE = 1000
MAX_BATCH_WAIT_MS = 10 * 60 * 1000

Decorator = Callable[[Any], "PartialFunction"]


@dataclass(eq=False)  # identity semantics, hashable, like the functions it stands for
class PartialFunction:
    """A function (or, for `@modal.concurrent`, a class) plus what the `modal.*` decorators asked of it."""

    raw_f: Callable[..., Any] | None
    user_cls: type | None = None
    web: WebConfig | None = None
    enter: bool = False
    snap: bool = False  # with enter: the pre-snapshot hook
    exit: bool = False
    is_method: bool = False  # @modal.method or @modal.batched: callable with .remote()
    is_generator: bool | None = None
    concurrent: bool = False
    max_inputs: int | None = None
    target_inputs: int | None = None
    batch_max_size: int | None = None
    batch_wait_ms: int | None = None
    cluster_size: int | None = None
    _set: set[str] = field(default_factory=set, repr=False)

    @property
    def is_interface(self) -> bool:
        return self.web is not None or self.is_method

    @property
    def is_lifecycle(self) -> bool:
        return self.enter or self.exit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.raw_f is None:
            raise TypeError(f"{self.user_cls!r} is decorated and must be registered with `@app.cls()`")
        return self.raw_f(*args, **kwargs)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # On an instance, behave like the plain method it wraps (replicas call it that way).
        if obj is None or self.raw_f is None:
            return self
        return self.raw_f.__get__(obj, objtype)

    def set_once(self, modal_param: str, **values: Any) -> None:
        """Merge one decorator's parameters; Modal refuses to set the same one twice."""
        if modal_param in self._set:
            raise InvalidError(f"Cannot set `{modal_param}` twice.")
        self._set.add(modal_param)
        for key, value in values.items():
            setattr(self, key, value)

    def check_composition(self) -> None:
        if self.is_interface and self.is_lifecycle:
            raise InvalidError("Interface decorators cannot be combined with lifecycle decorators.")
        if self.web is not None and self.is_method:
            raise InvalidError("Callable decorators cannot be combined with web interface decorators.")

    def check_target(self, decorator: str, *, require_sync: bool = False, require_nullary: bool = False) -> None:
        from .app import Cls, Function  # late: app imports this module

        if self.user_cls is not None and (self.is_interface or self.is_lifecycle):
            raise InvalidError(
                f"Cannot apply `@modal.{decorator}` to a class. Hint: consider applying to a method instead."
            )
        if isinstance(self.raw_f, Function):
            raise InvalidError(
                f"Cannot stack `@modal.{decorator}` on top of `@app.function`. Hint: swap the order of the decorators."
            )
        if isinstance(self.raw_f, Cls):
            raise InvalidError(
                f"Cannot stack `@modal.{decorator}` on top of `@app.cls()`. Hint: swap the order of the decorators."
            )
        if self.raw_f is None:
            return
        if not callable(self.raw_f):
            raise InvalidError(f"The object wrapped by `@modal.{decorator}` must be callable.")
        if require_sync and inspect.iscoroutinefunction(self.raw_f):
            raise InvalidError(f"The `@modal.{decorator}` decorator can't be applied to an async function.")
        if require_nullary and has_non_self_params(self.raw_f):
            raise InvalidError(f"Functions decorated by `@modal.{decorator}` can't have parameters.")


def has_non_self_params(f: Callable[..., Any]) -> bool:
    """Even a parameter with a default counts: Modal requires factories to be nullary."""
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name != "self" for p in params)


def _partial(obj: Any) -> PartialFunction:
    if isinstance(obj, PartialFunction):
        return obj
    if inspect.isclass(obj):
        return PartialFunction(None, user_cls=obj)
    return PartialFunction(obj)


def _apply(
    obj: Any,
    decorator: str,
    modal_param: str | None,
    values: dict[str, Any],
    *,
    require_sync: bool = False,
    require_nullary: bool = False,
) -> PartialFunction:
    """Stack one decorator onto `obj`, in Modal's order: merge, check composition, check the target."""
    pf = _partial(obj)
    if modal_param is None:
        for key, value in values.items():
            setattr(pf, key, value)
    else:
        pf.set_once(modal_param, **values)
    pf.check_composition()
    pf.check_target(decorator, require_sync=require_sync, require_nullary=require_nullary)
    return pf


def _domains(custom_domains: Iterable[str] | None) -> tuple[str, ...]:
    assert not isinstance(custom_domains, str), "custom_domains must be `Iterable[str]` but is `str` instead."
    if custom_domains is None:
        return ()
    domains = tuple(custom_domains)
    for d in domains:
        if not isinstance(d, str):
            raise TypeError(f"custom_domains must hold strings (domain names), not {type(d).__name__}")
    return domains


def _label(label: str | None) -> str | None:
    if label is not None and not isinstance(label, str):
        raise TypeError(f"`label` must be a string, not {type(label).__name__}")
    return label or None


def _web_decorator(config: WebConfig, *, factory: bool) -> Decorator:
    # asgi_app, wsgi_app and web_server wrap a factory, which Modal requires to be sync and nullary.
    def wrapper(obj: Any) -> PartialFunction:
        return _apply(
            obj, config.decorator, "webhook_config", {"web": config},
            require_sync=factory, require_nullary=factory,
        )

    return wrapper


def _fastapi_config(
    decorator: str, method: str, label: str | None, custom_domains: Iterable[str] | None, docs: bool,
    requires_proxy_auth: bool,
) -> WebConfig:
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string such as \"GET\", not {type(method).__name__}")
    return WebConfig(
        kind="fastapi", decorator=decorator, method=method, label=_label(label), docs=bool(docs),
        requires_proxy_auth=bool(requires_proxy_auth), custom_domains=_domains(custom_domains),
    )


def _fastapi_endpoint(
    *,
    method: str = "GET",
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Decorator:
    config = _fastapi_config("fastapi_endpoint", method, label, custom_domains, docs, requires_proxy_auth)
    return _web_decorator(config, factory=False)


def _web_endpoint(
    *,
    method: str = "GET",
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Decorator:
    """The old name of `fastapi_endpoint`. Modal 1.4 made it an error; mwtui keeps it working, with a
    warning, as Modal did from 0.73.89 to 1.3."""
    deprecation_warning(
        (2025, 3, 5), "The `@modal.web_endpoint` decorator has been renamed to `@modal.fastapi_endpoint`."
    )
    config = _fastapi_config("web_endpoint", method, label, custom_domains, docs, requires_proxy_auth)
    return _web_decorator(config, factory=False)


def _asgi_app(
    *,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Decorator:
    config = WebConfig(
        kind="asgi", decorator="asgi_app", method="", label=_label(label),
        requires_proxy_auth=bool(requires_proxy_auth), custom_domains=_domains(custom_domains),
    )
    return _web_decorator(config, factory=True)


def _wsgi_app(
    *,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Decorator:
    config = WebConfig(
        kind="wsgi", decorator="wsgi_app", method="", label=_label(label),
        requires_proxy_auth=bool(requires_proxy_auth), custom_domains=_domains(custom_domains),
    )
    return _web_decorator(config, factory=True)


def _web_server(
    port: int,
    *,
    startup_timeout: float = 5.0,
    label: str | None = None,
    custom_domains: Iterable[str] | None = None,
    requires_proxy_auth: bool = False,
) -> Decorator:
    # A bool is an int to Python but never a port; "8000" is refused too, as Modal does.
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError("First argument of `@web_server` must be a local port, such as `@web_server(8000)`.")
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)):
        raise TypeError(f"`startup_timeout` must be a number of seconds, not {type(startup_timeout).__name__}")
    if startup_timeout <= 0:
        raise InvalidError("The `startup_timeout` argument of `@web_server` must be positive.")
    config = WebConfig(
        kind="web_server", decorator="web_server", method="", label=_label(label),
        requires_proxy_auth=bool(requires_proxy_auth), custom_domains=_domains(custom_domains),
        port=port, startup_timeout=float(startup_timeout),
    )
    return _web_decorator(config, factory=True)


def _enter(*, snap: bool = False) -> Decorator:
    def wrapper(obj: Any) -> PartialFunction:
        return _apply(obj, "enter", None, {"enter": True, "snap": bool(snap)})

    return wrapper


def _exit() -> Decorator:
    def wrapper(obj: Any) -> PartialFunction:
        return _apply(obj, "exit", None, {"exit": True})

    return wrapper


def _generator_flag(obj: Any, is_generator: bool | None) -> bool:
    if is_generator is not None:
        return is_generator
    f = obj.raw_f if isinstance(obj, PartialFunction) else obj
    return inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)


def _method(*, is_generator: bool | None = None) -> Decorator:
    def wrapper(obj: Any) -> PartialFunction:
        flag = _generator_flag(obj, is_generator)
        return _apply(obj, "method", "is_generator", {"is_method": True, "is_generator": flag})

    return wrapper


def _batched(*, max_batch_size: int, wait_ms: int) -> Decorator:
    if max_batch_size < 1:
        raise InvalidError("max_batch_size must be a positive integer.")
    if max_batch_size > MAX_MAX_BATCH_SIZE:
        raise InvalidError(f"max_batch_size cannot be greater than {MAX_MAX_BATCH_SIZE}.")
    if wait_ms < 0:
        raise InvalidError("wait_ms must be a non-negative integer.")
    if wait_ms > MAX_BATCH_WAIT_MS:
        raise InvalidError(f"wait_ms cannot be greater than {MAX_BATCH_WAIT_MS}.")

    def wrapper(obj: Any) -> PartialFunction:
        values = {"is_method": True, "batch_max_size": max_batch_size, "batch_wait_ms": wait_ms}
        return _apply(obj, "batched", "batch_max_size", values)

    return wrapper


def _concurrent(*, max_inputs: int | None = None, target_inputs: int | None = None) -> Decorator:
    """Inputs per replica. A missing `max_inputs` is reported by `@app.function` / `@app.cls`, as Modal
    does; use on a method is reported by `@app.cls`."""
    if max_inputs is not None and target_inputs is not None and target_inputs > max_inputs:
        raise InvalidError("`target_inputs` parameter cannot be greater than `max_inputs`.")

    def wrapper(obj: Any) -> PartialFunction:
        values = {"concurrent": True, "max_inputs": max_inputs, "target_inputs": target_inputs}
        return _apply(obj, "concurrent", "max_concurrent_inputs", values)

    return wrapper


def _clustered(*, size: int, rdma: bool = False) -> Decorator:
    """Multi-node clusters do not exist locally; accepted so that files using it still load."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidError("cluster size must be a positive integer")

    def wrapper(obj: Any) -> PartialFunction:
        return _apply(obj, "clustered", "cluster_size", {"cluster_size": size})

    return wrapper


fastapi_endpoint = _fastapi_endpoint
web_endpoint = _web_endpoint
asgi_app = _asgi_app
wsgi_app = _wsgi_app
web_server = _web_server
enter = _enter
exit = _exit  # noqa: A001 - Modal's own name
method = _method
batched = _batched
concurrent = _concurrent
clustered = _clustered
