"""`modal.App` and what `@app.function` / `@app.cls` register.

Registration records the function or class, its web config and its options. It runs nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .exception import InvalidError
from .model import MethodInfo, Options, Source, WebConfig
from .partial import PartialFunction

# Keywords Modal's @app.function accepts that change nothing locally; kept in Options.extra.
_ACCEPTED = {
    "image", "schedule", "env", "secrets", "gpu", "serialized", "network_file_systems", "volumes", "cpu",
    "memory", "ephemeral_disk", "min_containers", "max_containers", "buffer_containers",
    "scaledown_window", "proxy", "retries", "timeout", "startup_timeout", "name", "is_generator", "cloud",
    "region", "routing_region", "nonpreemptible", "enable_memory_snapshot", "block_network",
    "restrict_modal_access", "single_use_containers", "i6pn", "include_source", "experimental_options",
    "_experimental_restrict_output", "max_inputs", "_experimental_buffer_containers",
    "keep_warm", "concurrency_limit", "container_idle_timeout", "allow_concurrent_inputs",
    "_experimental_scheduler_placement", "scheduler_placement", "_experimental_proxy_ip",
}


def _source(obj: Any) -> Source:
    try:
        return Source(inspect.getsourcefile(obj) or "", inspect.getsourcelines(obj)[1])
    except (TypeError, OSError):
        code = getattr(obj, "__code__", None)
        return Source(getattr(code, "co_filename", ""), getattr(code, "co_firstlineno", 0))


class Function:
    """A registered function. Web functions are served; others can be called from web code."""

    def __init__(
        self, app: App, tag: str, raw_f: Callable[..., Any], web: WebConfig | None, options: Options
    ) -> None:
        self.app = app
        self.tag = tag
        self.raw_f = raw_f
        self.web = web
        self.options = options
        self.source = _source(raw_f)
        self._web_url: str | None = None

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def get_web_url(self) -> str | None:
        return self._web_url

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<modal.Function {self.tag}>"


class Cls:
    """A registered class: one replica pool serves all its web methods."""

    def __init__(self, app: App, tag: str, user_cls: type, options: Options) -> None:
        self.app = app
        self.tag = tag
        self.user_cls = user_cls
        self.options = options
        self.source = _source(user_cls)
        self.methods: dict[str, MethodInfo] = {}
        for klass in reversed(user_cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, PartialFunction):
                    self.methods[name] = MethodInfo(
                        name=name,
                        raw_f=value.raw_f,
                        web=value.web,
                        enter=value.enter,
                        snap=value.snap,
                        exit=value.exit,
                        is_method=value.is_method,
                        source=_source(value.raw_f),
                    )

    def web_methods(self) -> list[MethodInfo]:
        return [m for m in self.methods.values() if m.web is not None]

    def enter_methods(self) -> list[MethodInfo]:
        # Modal runs snap=True enters before the others.
        enters = [m for m in self.methods.values() if m.enter]
        return [m for m in enters if m.snap] + [m for m in enters if not m.snap]

    def exit_methods(self) -> list[MethodInfo]:
        return [m for m in self.methods.values() if m.exit]

    def instantiate(self) -> Any:
        """Make the instance as Modal does: without running `__init__`."""
        return self.user_cls.__new__(self.user_cls)

    def __call__(self, **kwargs: Any) -> Any:
        obj = self.instantiate()
        obj.__dict__.update(kwargs)
        return obj

    def __repr__(self) -> str:
        return f"<modal.Cls {self.tag}>"


class App:
    """`modal.App`: the registry of one app file."""

    def __init__(
        self,
        name: str | None = None,
        *,
        tags: dict[str, str] | None = None,
        image: Any = None,
        secrets: Any = (),
        volumes: dict[str, Any] | None = None,
        include_source: bool = True,
        **kwargs: Any,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidError("Invalid value for `name`: Must be string.")
        if not isinstance(secrets, (list, tuple)):
            raise InvalidError("`secrets=` has to be a list or tuple of `modal.Secret` objects")
        self.name = name
        self.tags = dict(tags or {})
        self.image = image
        self.secrets = list(secrets)
        self.volumes = dict(volumes or {})
        self._functions: dict[str, Function] = {}
        self._classes: dict[str, Cls] = {}
        self._local_entrypoints: dict[str, Callable[..., Any]] = {}

    @property
    def description(self) -> str | None:
        return self.name

    @property
    def registered_functions(self) -> dict[str, Function]:
        return dict(self._functions)

    @property
    def registered_classes(self) -> dict[str, Cls]:
        return dict(self._classes)

    @property
    def registered_web_endpoints(self) -> list[str]:
        names = [t for t, f in self._functions.items() if f.web]
        for tag, c in self._classes.items():
            names += [f"{tag}.{m.name}" for m in c.web_methods()]
        return names

    def _options(self, kwargs: dict[str, Any], concurrency: dict[str, int | None] | None) -> Options:
        unknown = set(kwargs) - _ACCEPTED
        if unknown:
            name = sorted(unknown)[0]
            raise TypeError(f"function() got an unexpected keyword argument '{name}'")
        opts = Options(
            min_containers=kwargs.get("min_containers") or 0,
            max_containers=kwargs.get("max_containers"),
            buffer_containers=kwargs.get("buffer_containers") or 0,
            scaledown_window=kwargs.get("scaledown_window") or 60,
            timeout=kwargs.get("timeout", 300),
            startup_timeout=kwargs.get("startup_timeout"),
            env=dict(kwargs.get("env") or {}),
            secrets=list(self.secrets) + list(kwargs.get("secrets") or []),
            volumes={**self.volumes, **dict(kwargs.get("volumes") or {})},
            image=kwargs.get("image") or self.image,
            extra=dict(kwargs),
        )
        if concurrency and concurrency.get("max_inputs"):
            opts.max_inputs = int(concurrency["max_inputs"] or 1)
            opts.target_inputs = int(concurrency.get("target_inputs") or opts.max_inputs)
        return opts

    def function(self, _f: Any = None, **kwargs: Any) -> Callable[[Any], Function]:
        if _f is not None:
            raise TypeError("function() takes 1 positional argument but 2 were given")

        def wrapper(f: Any) -> Function:
            if inspect.isclass(f):
                raise TypeError(
                    "The `@app.function` decorator cannot be used on a class. Please use `@app.cls` instead."
                )
            pf = f if isinstance(f, PartialFunction) else PartialFunction(f)
            raw = pf.raw_f
            if pf.web is not None and (inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw)):
                if pf.web.kind == "fastapi":
                    raise InvalidError(
                        "Webhooks cannot be generators. If you want a streaming response, see "
                        "https://modal.com/docs/guide/streaming-endpoints"
                    )
                raise InvalidError("Webhooks cannot be generators")
            if pf.web is not None and kwargs.get("retries"):
                raise InvalidError("Web Functions do not support retries.")
            tag = kwargs.get("name") or raw.__qualname__
            fn = Function(self, tag, raw, pf.web, self._options(kwargs, pf.concurrency))
            self._functions[tag] = fn
            return fn

        return wrapper

    def cls(self, _c: Any = None, **kwargs: Any) -> Callable[[type], Cls]:
        if _c is not None:
            raise TypeError("cls() takes 1 positional argument but 2 were given")

        def wrapper(user_cls: type) -> Cls:
            concurrency = getattr(user_cls, "__mwtui_concurrency__", None)
            c = Cls(self, user_cls.__name__, user_cls, self._options(kwargs, concurrency))
            self._classes[c.tag] = c
            return c

        return wrapper

    def local_entrypoint(self, _f: Any = None, *, name: str | None = None) -> Callable[[Any], Any]:
        if _f is not None:
            raise TypeError("local_entrypoint() takes 1 positional argument but 2 were given")

        def wrapper(f: Callable[..., Any]) -> Callable[..., Any]:
            tag = name or f.__qualname__
            if tag in self._local_entrypoints:
                raise InvalidError(f"Duplicate local entrypoint name: {tag}. Local entrypoint names must be unique.")
            self._local_entrypoints[tag] = f
            return f

        return wrapper

    def include(self, other: App) -> App:
        self._functions.update(other._functions)
        self._classes.update(other._classes)
        return self

    def run(self, *args: Any, **kwargs: Any) -> Any:
        import contextlib

        return contextlib.nullcontext(self)
