"""`@app.cls` classes: their checks, `modal.parameter()`, and the objects user code makes from them.

A replica builds the instance itself (`Cls.instantiate`), as Modal's container does: without running
`__init__`, parameters written straight into `__dict__`. `Model(name="x").predict.local()` in user code
goes through `Obj`, which runs the `@enter` methods once, as Modal does locally.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .call_route import CallRoute, app_name_of
from .exception import InvalidError, NotFoundError
from .functions import Invocable, run_async, run_sync, source_of
from .model import MISSING, PARAMETER_TYPES, MethodInfo, Options, ParameterInfo, WebConfig
from .partial import PartialFunction

if TYPE_CHECKING:
    from .app import App


class Parameter:
    """What `modal.parameter()` puts in the class body. On an instance without a value, reading the
    attribute gives the default, or AttributeError when there is none (Modal's behaviour)."""

    def __init__(self, default: Any, init: bool) -> None:
        self.default = default
        self.init = init
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        if self.default is MISSING:
            raise AttributeError(f"modal.parameter() '{self.name}' has no default value and no specified value")
        return self.default


def parameter(*, default: Any = MISSING, init: bool = True) -> Any:
    return Parameter(default, init)


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t)


def _resolve_annotation(user_cls: type, name: str, raw: Any) -> Any:
    """Annotations may be strings (`from __future__ import annotations`); resolve them when we can."""
    if not isinstance(raw, str):
        return raw
    try:
        return typing.get_type_hints(user_cls).get(name, raw)
    except Exception:  # noqa: BLE001 - an unresolvable hint is reported by name below
        return {t.__name__: t for t in PARAMETER_TYPES}.get(raw, raw)


def class_parameters(user_cls: type) -> dict[str, ParameterInfo]:
    """Check the class the way Modal's `_validate_construction_mechanism` does, and list its parameters."""
    if user_cls.__init__ is not object.__init__:  # type: ignore[misc]  # inherited ones count too
        name = user_cls.__name__
        raise InvalidError(
            f"Modal class {name} cannot have a custom constructor (__init__) method.\n\n"
            "Use @modal.enter() for initialization logic, and parameterize classes with\n"
            "dataclass-style modal.parameter() declarations, e.g.:\n\n"
            f"class {name}:\n    model_name: str = modal.parameter()\n\n"
            "More information on class parameterization can be found here: "
            "https://modal.com/docs/guide/parametrized-functions"
        )
    params: dict[str, Parameter] = {}
    annotations: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        annotations.update(klass.__dict__.get("__annotations__", {}))
        params.update({k: v for k, v in vars(klass).items() if isinstance(v, Parameter) and v.init})
    if params.keys() - annotations.keys():
        raise InvalidError("All modal.parameter() specifications need to be type-annotated")
    out: dict[str, ParameterInfo] = {}
    for name, spec in params.items():
        t = _resolve_annotation(user_cls, name, annotations[name])
        if t not in PARAMETER_TYPES:
            supported = ", ".join(x.__name__ for x in PARAMETER_TYPES)
            raise InvalidError(
                f"Class parameter '{name}': {_type_name(t)} is not a supported modal.parameter() type. "
                f"Use one of: {supported}"
            )
        out[name] = ParameterInfo(name, t, spec.default)
    return out


def class_partials(user_cls: type) -> dict[str, PartialFunction]:
    """Every decorated method, base classes first, so that a subclass's override wins."""
    found: dict[str, PartialFunction] = {}
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, PartialFunction) and value.raw_f is not None:
                found[name] = value
    return found


def check_class_partials(user_cls: type, partials: dict[str, PartialFunction], enable_memory_snapshot: bool) -> None:
    """The method-level rules `@app.cls` enforces, in Modal's order."""
    batched = [pf for pf in partials.values() if pf.batch_max_size is not None]
    interface = [pf for pf in partials.values() if pf.is_interface]
    if len(batched) > 1:
        raise InvalidError(f"Modal class {user_cls.__name__} can only have one batched function.")
    if batched and len(interface) > 1:
        raise InvalidError(
            f"Modal class {user_cls.__name__} with a modal batched function cannot have other modal methods."
        )
    if any(pf.enter and pf.snap for pf in partials.values()) and not enable_memory_snapshot:
        raise InvalidError("A class must have `enable_memory_snapshot=True` to use `snap=True` on its methods.")
    if any(pf.concurrent for pf in partials.values()):
        raise InvalidError("The `@modal.concurrent` decorator cannot be used on methods; decorate the class instead.")


class Cls:
    """A class registered with `@app.cls`: one replica pool serves all its web methods."""

    def __init__(
        self,
        app: App,
        tag: str,
        user_cls: type,
        options: Options,
        *,
        partials: dict[str, PartialFunction] | None = None,
        parameters: dict[str, ParameterInfo] | None = None,
    ) -> None:
        self.app = app
        self.tag = tag
        self.user_cls = user_cls
        self.options = options
        self.source = source_of(user_cls)
        self.parameters: dict[str, ParameterInfo] = dict(parameters or {})
        partials = class_partials(user_cls) if partials is None else partials
        self.methods: dict[str, MethodInfo] = {
            name: MethodInfo(
                name=name,
                raw_f=pf.raw_f,
                web=pf.web,
                enter=pf.enter,
                snap=pf.snap,
                exit=pf.exit,
                is_method=pf.is_method,
                source=source_of(pf.raw_f),
                is_generator=bool(pf.is_generator),
                batch_max_size=pf.batch_max_size,
                batch_wait_ms=pf.batch_wait_ms or 0,
            )
            for name, pf in partials.items()
            if pf.raw_f is not None
        }

    def web_methods(self) -> list[MethodInfo]:
        return [m for m in self.methods.values() if m.web is not None]

    def call_methods(self) -> dict[str, MethodInfo]:
        """Its `@modal.method`s, which other pools call (`Model().predict.remote()`), by name."""
        return {m.name: m for m in self.methods.values() if m.is_method and m.web is None}

    def enter_methods(self) -> list[MethodInfo]:
        # Modal runs snap=True enters (before the snapshot) ahead of the others.
        enters = [m for m in self.methods.values() if m.enter]
        return [m for m in enters if m.snap] + [m for m in enters if not m.snap]

    def exit_methods(self) -> list[MethodInfo]:
        return [m for m in self.methods.values() if m.exit]

    def instantiate(self, params: Mapping[str, Any] | None = None) -> Any:
        """Make the instance as Modal's container does: without running `__init__`, with parameter
        values (given ones, else defaults) written straight into `__dict__`."""
        obj = self.user_cls.__new__(self.user_cls)
        values = {p.name: p.default for p in self.parameters.values() if not p.required}
        values.update(params or {})
        obj.__dict__.update(values)
        return obj

    def parse_parameters(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Parameter values from a query string, converted by annotation (how Modal's web endpoints on a
        parametrized class take them). Raises ValueError for a missing required one or a bad value."""
        out: dict[str, Any] = {}
        for p in self.parameters.values():
            if p.name in query:
                out[p.name] = p.parse(query[p.name])
            elif p.required:
                raise ValueError(f"missing required parameter '{p.name}' (a query argument)")
        return out

    def parameter_specs(self) -> list[dict[str, Any]]:
        """The parameters as JSON (see `mwtui.engine.params`): what the gateway needs to validate a query."""
        from ..params import ParamSpec, to_json_value

        return [
            ParamSpec(p.name, p.type.__name__, not p.required,
                      None if p.required else to_json_value(p.default)).to_json()
            for p in self.parameters.values()
        ]

    def __call__(self, *args: Any, **kwargs: Any) -> Obj:
        if args:
            raise InvalidError(
                "Can't use positional arguments with modal.parameter-based synthetic constructors.\n"
                "Use (<parameter_name>=value) keyword arguments when constructing classes instead."
            )
        for key in kwargs:
            if key not in self.parameters:
                raise TypeError(f"{self.tag}() got an unexpected keyword argument '{key}'")
        missing = [p.name for p in self.parameters.values() if p.required and p.name not in kwargs]
        if missing:
            raise TypeError(f"{self.tag}() missing a required argument: '{missing[0]}'")
        return Obj(self, kwargs)

    def __getattr__(self, name: str) -> Any:
        # The class's own static attributes stay reachable, as on Modal; methods need an instance.
        if name.startswith("__") or "user_cls" not in self.__dict__:
            raise AttributeError(name)
        value = getattr(self.user_cls, name)
        if isinstance(value, PartialFunction):
            raise AttributeError(
                "You can't access methods on a Cls directly - Did you forget to instantiate the class first?\n"
                f"e.g. instead of {self.tag}.{name}.remote(), do {self.tag}().{name}.remote()"
            )
        return value

    def with_options(self, **kwargs: Any) -> Cls:
        return self

    def with_concurrency(self, **kwargs: Any) -> Cls:
        return self

    def with_batching(self, **kwargs: Any) -> Cls:
        return self

    def hydrate(self, client: Any = None) -> Cls:
        return self

    @staticmethod
    def from_name(app_name: str, name: str, **kwargs: Any) -> ClsRef:
        return ClsRef(app_name, name)

    def __repr__(self) -> str:
        return f"<modal.Cls {self.tag}>"


class Obj:
    """`Model(...)`: an instance handle. Attribute access gives callable methods or instance state."""

    def __init__(self, cls: Cls, params: dict[str, Any]) -> None:
        self._cls = cls
        self._params = params
        self._instance: Any = None
        self._entered = False
        self._lock = threading.Lock()

    def _user_instance(self) -> Any:
        if self._instance is None:
            self._instance = self._cls.instantiate(self._params)
        return self._instance

    def _enter(self) -> None:
        with self._lock:  # spawned and mapped calls may arrive on several threads at once
            if self._entered:
                return
            instance = self._user_instance()
            for m in self._cls.enter_methods():
                run_sync(m.raw_f.__get__(instance))
            self._entered = True

    async def _aenter(self) -> None:
        if self._entered:
            return
        if not any(inspect.iscoroutinefunction(m.raw_f) for m in self._cls.enter_methods()):
            await asyncio.to_thread(self._enter)
            return
        instance = self._user_instance()
        for m in self._cls.enter_methods():
            await run_async(m.raw_f.__get__(instance))
        self._entered = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        info = self._cls.methods.get(name)
        if info is not None and (info.is_method or info.web is not None):
            return BoundMethod(self, info)
        return getattr(self._user_instance(), name)

    def update_autoscaler(self, **kwargs: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<modal.Obj {self._cls.tag}>"


# "Remote" calls share one entered instance per class and parameter values, as they would share a
# container on Modal: `Model(name="x").predict.remote()` in every request runs `@enter` once.
_shared: dict[tuple[Cls, tuple[tuple[str, Any], ...]], Obj] = {}
_shared_lock = threading.Lock()


def shared_obj(obj: Obj) -> Obj:
    key = (obj._cls, tuple(sorted(obj._params.items())))
    with _shared_lock:
        return _shared.setdefault(key, Obj(obj._cls, dict(obj._params)))


class BoundMethod(Invocable):
    """`Model().predict`: `.local()` runs `@enter` once for this handle and calls the method;
    `.remote()` and friends do the same on the instance shared by these parameter values (web
    methods refuse them, as on Modal)."""

    def __init__(self, obj: Obj, info: MethodInfo) -> None:
        self._obj = obj
        self._info = info
        self.tag = f"{obj._cls.tag}.{info.name}"
        self.web: WebConfig | None = info.web
        self.is_generator = info.is_generator
        self._setup_invokers()

    def _options(self) -> Options | None:
        return self._obj._cls.options

    def _target(self) -> Callable[..., Any]:
        return _method_caller(self._obj, self._info.raw_f)

    def _call_route(self) -> CallRoute | None:
        cls = self._obj._cls
        from ..params import to_json_value

        values = {k: to_json_value(v) for k, v in self._obj._params.items()} if cls.parameters else {}
        return CallRoute(app_name_of(cls.app), cls.tag, self._info.name, values, cls.options.timeout,
                         cls.options.extra.get("retries"), cls.user_cls.__module__)

    def _remote_target(self, how: str) -> Callable[..., Any]:
        target = super()._remote_target(how)  # checks, and the call route or the environment
        if isinstance(target, CallRoute):
            return target
        return _method_caller(shared_obj(self._obj), self._info.raw_f)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        # Like Modal: an async method gives a coroutine that enters first.
        return self._target()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<modal.Function {self.tag}>"


def _method_caller(obj: Obj, raw: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(raw):

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            await obj._aenter()
            return await raw(obj._user_instance(), *args, **kwargs)

        return call_async

    def call(*args: Any, **kwargs: Any) -> Any:
        obj._enter()
        return raw(obj._user_instance(), *args, **kwargs)

    return call


class ClsRef:
    """`modal.Cls.from_name(app, name)`. In a replica that mwtui started, its instances call the class's
    pool in whichever app mwtui serves it; elsewhere it is resolved against the apps in this process."""

    def __init__(self, app_name: str, name: str) -> None:
        self.app_name = app_name
        self.name = name

    def resolve(self) -> Cls:
        from .app import App

        for app in App._all_apps:
            if app.name == self.app_name and self.name in app._classes:
                return app._classes[self.name]
        raise NotFoundError(
            f"Lookup failed for Cls '{self.name}' from the '{self.app_name}' app: "
            "no such app or class is defined in this process."
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Obj | RemoteObj:
        from . import call_client

        try:
            return self.resolve()(*args, **kwargs)  # defined here too: its methods' checks apply
        except NotFoundError:
            if not call_client.available():
                raise
        if args:
            raise InvalidError("Can't use positional arguments with modal.parameter-based synthetic constructors.")
        return RemoteObj(self.app_name, self.name, kwargs)

    def with_options(self, **kwargs: Any) -> ClsRef:
        return self

    def hydrate(self, client: Any = None) -> ClsRef:
        from . import call_client

        if call_client.available():
            if call_client.served(self.app_name, self.name) != (True, True):
                raise call_client.not_found("Cls", self.app_name, self.name)
            return self
        self.resolve()
        return self


class RemoteObj:
    """An instance of a class found with `Cls.from_name` that is defined in another app: only its
    methods' remote calls reach it (its pool has the class)."""

    def __init__(self, app_name: str, cls_name: str, params: dict[str, Any]) -> None:
        from ..params import to_json_value

        self._app_name, self._cls_name = app_name, cls_name
        self._params = {k: to_json_value(v) for k, v in params.items()}

    def __getattr__(self, name: str) -> RemoteMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return RemoteMethod(self, name)

    def __repr__(self) -> str:
        return f"<modal.Obj {self._app_name}.{self._cls_name}>"


class RemoteMethod(Invocable):
    web = None

    def __init__(self, obj: RemoteObj, method: str) -> None:
        self._obj = obj
        self.tag = f"{obj._cls_name}.{method}"
        self._method = method
        self._setup_invokers()

    def _remote_target(self, how: str) -> Callable[..., Any]:
        o = self._obj
        return CallRoute(o._app_name, o._cls_name, self._method, o._params, kind="Cls")

    def local(self, *args: Any, **kwargs: Any) -> Any:
        from .exception import ExecutionError

        raise ExecutionError(
            "The definition for this Cls is missing, so it is not possible to invoke it locally. "
            "If this Cls was retrieved via `Cls.from_name`, you need to use one of the remote invocation "
            "methods instead."
        )
