"""`modal.App` and what `@app.function` / `@app.cls` register.

Registration records the function or class, its web config and its options, after Modal's checks.
It runs nothing.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from textwrap import dedent
from typing import Any, ClassVar

from . import options as opts
from . import runtime
from .cls import Cls, check_class_partials, class_parameters, class_partials
from .deprecation import warn_at_user_line
from .exception import InvalidError
from .functions import Function
from .image import Image
from .model import Options
from .partial import PartialFunction
from .secret import Secret

__all__ = ["App", "Cls", "Function", "LocalEntrypoint"]


def _is_global(qualname: str) -> bool:
    return "<locals>" not in qualname.split(".")


def _is_method(qualname: str) -> bool:
    # "Cls.f" is a method; "outer.<locals>.f" is not, "outer.<locals>.Cls.f" is.
    rest = qualname.split("<locals>.")[-1]
    return len(rest.split(".")) > 1


_ON_METHOD = (
    "The `@app.function` decorator cannot be used on class methods. "
    "Swap with `@modal.method` or one of the Web Function decorators. "
    "Example: \n\n```python\n@app.cls()\nclass MyClass:\n    @modal.method()\n    def f(self, x):\n        ...\n```\n"
)


class LocalEntrypoint:
    """`@app.local_entrypoint()`: registered so the file loads; mwtui never runs it."""

    def __init__(self, raw_f: Callable[..., Any], app: App) -> None:
        self.raw_f = raw_f
        self.app = app

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)


class App:
    """`modal.App`: the registry of one app file."""

    _all_apps: ClassVar[list[App]] = []  # for Function.from_name / Cls.from_name lookups

    def __init__(
        self,
        name: str | None = None,
        *,
        tags: dict[str, str] | None = None,
        image: Image | None = None,
        secrets: Any = (),
        volumes: dict[str, Any] | None = None,
        include_source: bool = True,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InvalidError("Invalid value for `name`: Must be string.")
        if not isinstance(secrets, (list, tuple)) or not all(isinstance(s, Secret) for s in secrets):
            raise InvalidError("`secrets=` has to be a list or tuple of `modal.Secret` objects")
        if image is not None and not isinstance(image, Image):
            raise InvalidError("`image=` has to be a `modal.Image` object")
        self._name = name
        self.tags = dict(tags or {})
        self.image = image
        self.secrets = list(secrets)
        self.volumes = dict(volumes or {})
        self.include_source = include_source
        self._functions: dict[str, Function] = {}
        self._classes: dict[str, Cls] = {}
        self._local_entrypoints: dict[str, LocalEntrypoint] = {}
        self._web_endpoints: list[str] = []
        App._all_apps.append(self)
        runtime.app_created(self)

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def description(self) -> str | None:
        return self._name

    @property
    def app_id(self) -> str | None:
        return None

    @property
    def registered_functions(self) -> dict[str, Function]:
        return dict(self._functions)

    @property
    def registered_classes(self) -> dict[str, Cls]:
        return dict(self._classes)

    @property
    def registered_entrypoints(self) -> dict[str, LocalEntrypoint]:
        return dict(self._local_entrypoints)

    @property
    def registered_web_endpoints(self) -> list[str]:
        return list(self._web_endpoints)

    def _add_function(self, fn: Function) -> None:
        old = self._functions.get(fn.tag)
        if old is not None and old is not fn:
            # Modal only logs this; it is not an error.
            warn_at_user_line(
                f"Warning: function name '{fn.tag}' collision! Overriding existing function "
                f"[{old.raw_f.__module__}].{old.raw_f.__qualname__} with new function "
                f"[{fn.raw_f.__module__}].{fn.raw_f.__qualname__}"
            )
        if fn.tag in self._classes:
            warn_at_user_line(f"Warning: tag {fn.tag} exists but is overridden by function")
        self._functions[fn.tag] = fn
        if fn.web is not None and fn.tag not in self._web_endpoints:
            self._web_endpoints.append(fn.tag)

    def function(self, **kwargs: Any) -> Callable[[Any], Function]:
        given = dict(kwargs)
        prepared = opts.prepare(given, opts.FUNCTION_KEYWORDS, "App.function")

        def wrapper(f: Any) -> Function:
            if inspect.isclass(f):
                raise TypeError(
                    "The `@app.function` decorator cannot be used on a class. Please use `@app.cls` instead."
                )
            if isinstance(f, PartialFunction):
                if f.raw_f is None:
                    raise TypeError(
                        "The `@app.function` decorator cannot be used on a class. Please use `@app.cls` instead."
                    )
                if _is_method(getattr(f.raw_f, "__qualname__", "")):
                    raise InvalidError(_ON_METHOD)
                pf: PartialFunction | None = f
                raw = f.raw_f
            else:
                qualname = getattr(f, "__qualname__", "")
                if not _is_global(qualname) and not prepared.get("serialized"):
                    raise InvalidError(dedent("""
                        The `@app.function` decorator must apply to functions in global scope,
                        unless `serialized=True` is set.
                        If trying to apply additional decorators, they may need to use `functools.wraps`.
                        """))
                if _is_method(qualname):
                    raise InvalidError(_ON_METHOD)
                pf, raw = None, f
            web = pf.web if pf is not None else None
            is_generator = prepared.get("is_generator")
            if is_generator is None:
                is_generator = bool(pf and pf.is_generator) or inspect.isgeneratorfunction(raw) or \
                    inspect.isasyncgenfunction(raw)
            tag = prepared.get("name") or getattr(raw, "__qualname__", None) or getattr(raw, "__name__", repr(raw))
            schedule = prepared.get("schedule")
            if schedule is not None and _needs_arguments(raw):
                raise InvalidError(
                    f"Function {raw} has a schedule, so it needs to support being called with no arguments"
                )
            opts.check_retries(
                prepared.get("retries"), is_web=web is not None, is_generator=is_generator, owner=f"Function '{tag}'"
            )
            options = opts.resolve(self, prepared, pf, given)
            if is_generator and web is not None:
                if web.kind == "fastapi":
                    raise InvalidError(
                        "Webhooks cannot be generators. If you want a streaming response, see "
                        "https://modal.com/docs/guide/streaming-endpoints"
                    )
                raise InvalidError("Webhooks cannot be generators")
            if pf is not None and pf.batch_max_size is not None:
                _check_batched(raw, is_generator)
            fn = Function(self, tag, raw, web, options, is_generator=is_generator, schedule=schedule)
            self._add_function(fn)
            runtime.registered(fn.tag, fn.options)
            return fn

        return wrapper

    def cls(self, **kwargs: Any) -> Callable[[Any], Cls]:
        given = dict(kwargs)
        prepared = opts.prepare(given, opts.CLS_KEYWORDS, "App.cls")

        def wrapper(obj: Any) -> Cls:
            pf = obj if isinstance(obj, PartialFunction) else None
            if pf is not None and pf.concurrent and pf.max_inputs is None:
                raise TypeError("`@modal.concurrent()` missing required argument: `max_inputs`.")
            user_cls = pf.user_cls if pf is not None else obj
            if not inspect.isclass(user_cls):
                raise TypeError("The @app.cls decorator must be used on a class.")
            partials = class_partials(user_cls)
            check_class_partials(user_cls, partials, bool(prepared.get("enable_memory_snapshot")))
            opts.check_retries(
                prepared.get("retries"), is_web=False, is_generator=False, owner=f"Class '{user_cls.__name__}'"
            )
            options: Options = opts.resolve(self, prepared, pf, given)
            parameters = class_parameters(user_cls)
            c = Cls(self, user_cls.__name__, user_cls, options, partials=partials, parameters=parameters)
            batched = next((m for m in c.methods.values() if m.batch_max_size), None)
            if batched is not None:  # its one batched method: a replica takes a whole batch at once
                size = batched.batch_max_size or 1
                options.max_inputs, options.target_inputs = max(options.max_inputs, size), max(options.target_inputs, size)
            for name, info in c.methods.items():
                if info.web is not None:
                    self._web_endpoints.append(f"{c.tag}.{name}")
            self._classes[c.tag] = c
            runtime.registered(c.tag, c.options)
            return c

        return wrapper

    def local_entrypoint(self, *, name: str | None = None) -> Callable[[Callable[..., Any]], LocalEntrypoint]:
        if name is not None and not isinstance(name, str):
            raise InvalidError("Invalid value for `name`: Must be string.")

        def wrapper(f: Callable[..., Any]) -> LocalEntrypoint:
            tag = name if name is not None else f.__qualname__
            if tag in self._local_entrypoints:
                raise InvalidError(f"Duplicate local entrypoint name: {tag}. Local entrypoint names must be unique.")
            entry = self._local_entrypoints[tag] = LocalEntrypoint(f, self)
            return entry

        return wrapper

    def include(self, other_app: App, /, inherit_tags: bool = True) -> App:
        """Merge another app's functions and classes into this one (its web endpoints become ours)."""
        for fn in other_app._functions.values():
            self._add_function(fn)
        for tag, c in other_app._classes.items():
            self._classes[tag] = c
            self._web_endpoints += [f"{tag}.{m.name}" for m in c.web_methods()]
        if inherit_tags:
            self.tags = {**other_app.tags, **self.tags}
        return self

    def run(self, *args: Any, **kwargs: Any) -> Any:
        import contextlib

        return contextlib.nullcontext(self)

    def deploy(self, *args: Any, **kwargs: Any) -> App:
        warnings.warn("app.deploy() does nothing under mwtui", stacklevel=2)
        return self

    def __repr__(self) -> str:
        return f"App({self._name!r})" if self._name else "App()"


def _needs_arguments(f: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in params
    )


def _check_batched(raw: Callable[..., Any], is_generator: bool) -> None:
    name = raw.__name__
    if is_generator:
        raise InvalidError(f"Modal batched function {name} cannot return generators")
    for p in inspect.signature(raw).parameters.values():
        if p.default is not inspect.Parameter.empty:
            raise InvalidError(f"Modal batched function {name} does not accept default arguments.")
