"""The `modal` stand-in: every check Modal makes at import time, with Modal's messages, plus the seed's
deprecation aliases and the rest of the import-time surface. Mostly direct calls (fast); a few go
through `discover()` to check that the message reaches the person with file and line."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from mwtui.engine import sdk as modal
from mwtui.engine.discovery import discover
from mwtui.engine.loader import AppRef
from mwtui.engine.sdk.exception import DeprecationError, InvalidError
from mwtui.engine.sdk.model import Options, ParameterInfo


@pytest.fixture
def app(mwtui_home: Path) -> modal.App:
    # Spawned calls, Dicts and Queues are kept under MWTUI_HOME: never the real one in tests.
    return modal.App("t")


# ---------------------------------------------------------------- web decorators on the function


@pytest.mark.parametrize("deco,name", [
    (lambda: modal.asgi_app(), "asgi_app"),
    (lambda: modal.wsgi_app(), "wsgi_app"),
    (lambda: modal.web_server(8000), "web_server"),
])
def test_factory_decorators_refuse_async(deco, name) -> None:
    async def factory():
        return None

    with pytest.raises(InvalidError) as e:
        deco()(factory)
    assert str(e.value) == f"The `@modal.{name}` decorator can't be applied to an async function."


@pytest.mark.parametrize("deco,name", [
    (lambda: modal.asgi_app(), "asgi_app"),
    (lambda: modal.wsgi_app(), "wsgi_app"),
    (lambda: modal.web_server(8000), "web_server"),
])
def test_factory_decorators_refuse_parameters_even_defaulted(deco, name) -> None:
    def factory(config: dict | None = None):
        return None

    with pytest.raises(InvalidError) as e:
        deco()(factory)
    assert str(e.value) == f"Functions decorated by `@modal.{name}` can't have parameters."


def test_factory_method_may_take_self_only() -> None:
    class C:
        @modal.asgi_app()
        def web(self):
            return None

    assert C.__dict__["web"].web.kind == "asgi"


def test_fastapi_endpoint_allows_async_and_parameters(app: modal.App) -> None:
    @app.function()
    @modal.fastapi_endpoint(method="POST")
    async def handler(data: dict, x: int = 1):
        return data

    assert handler.web.kind == "fastapi" and handler.web.method == "POST"


def test_web_decorator_above_app_function(app: modal.App) -> None:
    with pytest.raises(InvalidError) as e:
        @modal.fastapi_endpoint()
        @app.function(serialized=True)
        def hello():
            return 1
    assert str(e.value) == (
        "Cannot stack `@modal.fastapi_endpoint` on top of `@app.function`. Hint: swap the order of the decorators."
    )


def test_web_decorator_above_app_cls(app: modal.App) -> None:
    with pytest.raises(InvalidError) as e:
        @modal.asgi_app()
        @app.cls()
        class Model:
            pass
    assert str(e.value) == (
        "Cannot stack `@modal.asgi_app` on top of `@app.cls()`. Hint: swap the order of the decorators."
    )


def test_web_decorator_on_class() -> None:
    with pytest.raises(InvalidError) as e:
        @modal.fastapi_endpoint()
        class Model:
            pass
    assert str(e.value) == (
        "Cannot apply `@modal.fastapi_endpoint` to a class. Hint: consider applying to a method instead."
    )


def test_two_web_decorators() -> None:
    with pytest.raises(InvalidError, match=r"^Cannot set `webhook_config` twice\.$"):
        @modal.asgi_app()
        @modal.fastapi_endpoint()
        def f():
            return 1


@pytest.mark.parametrize("order", ["method_on_top", "web_on_top"])
def test_web_and_method(order: str) -> None:
    with pytest.raises(InvalidError, match="^Callable decorators cannot be combined with web interface decorators.$"):
        if order == "method_on_top":
            modal.method()(modal.fastapi_endpoint()(lambda self: 1))
        else:
            modal.fastapi_endpoint()(modal.method()(lambda self: 1))


@pytest.mark.parametrize("lifecycle", [lambda: modal.enter(), lambda: modal.exit()])
@pytest.mark.parametrize("interface", [lambda: modal.fastapi_endpoint(), lambda: modal.method()])
def test_interface_and_lifecycle(lifecycle, interface) -> None:
    msg = "^Interface decorators cannot be combined with lifecycle decorators.$"
    with pytest.raises(InvalidError, match=msg):
        lifecycle()(interface()(lambda self: 1))
    with pytest.raises(InvalidError, match=msg):
        interface()(lifecycle()(lambda self: 1))


@pytest.mark.parametrize("port", ["8000", 0, 65536, -1, 80.0, True, None])
def test_web_server_port_must_be_a_port(port) -> None:
    with pytest.raises(InvalidError) as e:
        modal.web_server(port)
    assert str(e.value) == "First argument of `@web_server` must be a local port, such as `@web_server(8000)`."


@pytest.mark.parametrize("port", [1, 8000, 65535])
def test_web_server_port_bounds(port: int) -> None:
    pf = modal.web_server(port)(lambda: None)
    assert pf.web.port == port and pf.web.startup_timeout == 5.0


@pytest.mark.parametrize("startup_timeout", [0, -1, -0.5])
def test_web_server_startup_timeout_must_be_positive(startup_timeout: float) -> None:
    with pytest.raises(InvalidError, match="^The `startup_timeout` argument of `@web_server` must be positive.$"):
        modal.web_server(8000, startup_timeout=startup_timeout)


def test_custom_domains_as_a_string() -> None:
    with pytest.raises(AssertionError, match=r"custom_domains must be `Iterable\[str\]` but is `str` instead."):
        modal.fastapi_endpoint(custom_domains="api.example.com")


def test_web_config_is_recorded(app: modal.App) -> None:
    @app.function()
    @modal.fastapi_endpoint(method="PUT", label="lbl", custom_domains=["a.example.com"], docs=True,
                            requires_proxy_auth=True)
    def f(x: int):
        return x

    w = f.web
    assert (w.kind, w.decorator, w.method, w.label, w.docs, w.requires_proxy_auth, w.custom_domains) == (
        "fastapi", "fastapi_endpoint", "PUT", "lbl", True, True, ("a.example.com",)
    )
    assert app._functions[f.tag] is f and f.tag.endswith(".f")  # the tag is the qualname, as on Modal
    assert app.registered_web_endpoints == [f.tag]


# ---------------------------------------------------------------- what @app.function adds


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_generator_fastapi_endpoint_mentions_streaming(app: modal.App, kind: str) -> None:
    if kind == "sync":
        def gen():
            yield 1
    else:
        async def gen():
            yield 1

    with pytest.raises(InvalidError) as e:
        app.function()(modal.fastapi_endpoint()(gen))
    assert str(e.value) == (
        "Webhooks cannot be generators. If you want a streaming response, see "
        "https://modal.com/docs/guide/streaming-endpoints"
    )


def _gen():
    yield 1


def test_generator_on_other_web_kinds(app: modal.App) -> None:
    with pytest.raises(InvalidError, match="^Webhooks cannot be generators$"):
        app.function()(modal.web_server(8000)(_gen))


def test_retries_on_web_function(app: modal.App) -> None:
    with pytest.raises(InvalidError, match="^Web Functions do not support retries.$"):
        @app.function(retries=3)
        @modal.fastapi_endpoint()
        def f():
            return 1


def test_retries_on_plain_function_is_fine(app: modal.App) -> None:
    @app.function(retries=modal.Retries(max_retries=2), serialized=True)
    def f():
        return 1

    assert f.web is None


def test_app_function_on_a_class(app: modal.App) -> None:
    with pytest.raises(TypeError, match="cannot be used on a class. Please use `@app.cls` instead."):
        @app.function()
        class C:
            pass


def test_app_function_on_a_method(app: modal.App) -> None:
    with pytest.raises(InvalidError, match="cannot be used on class methods"):
        class C:
            @app.function()
            @modal.fastapi_endpoint()
            def web(self):
                return 1


def test_plain_function_must_be_global_unless_serialized(app: modal.App) -> None:
    def local_fn():
        return 1

    with pytest.raises(InvalidError, match="must apply to functions in global scope"):
        app.function()(local_fn)
    assert app.function(serialized=True)(local_fn).tag.endswith("<locals>.local_fn")


def test_name_overrides_tag(app: modal.App) -> None:
    f = app.function(name="custom")(modal.fastapi_endpoint()(lambda: 1))
    assert f.tag == "custom" and "custom" in app._functions


def test_unknown_keyword(app: modal.App) -> None:
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'mounts'"):
        app.function(mounts=[])


def test_schedule_needs_a_nullary_function(app: modal.App) -> None:
    def job(x):
        return x

    with pytest.raises(InvalidError, match="has a schedule, so it needs to support being called with no arguments"):
        app.function(schedule=modal.Period(hours=1), serialized=True)(job)


# ---------------------------------------------------------------- autoscaling and concurrency knobs


def _web(app: modal.App, **kwargs) -> modal.Function:
    return app.function(**kwargs)(modal.fastapi_endpoint()(lambda: 1))


def test_defaults(app: modal.App) -> None:
    o = _web(app).options
    assert (o.min_containers, o.max_containers, o.buffer_containers, o.scaledown_window, o.timeout) == (
        0, None, 0, 60, 300
    )
    assert (o.max_inputs, o.target_inputs, o.startup_timeout, o.single_use_containers) == (1, 1, 300, False)


def test_knobs_are_recorded(app: modal.App) -> None:
    o = _web(app, min_containers=2, max_containers=5, buffer_containers=1, scaledown_window=120, timeout=30,
             startup_timeout=10).options
    assert (o.min_containers, o.max_containers, o.buffer_containers, o.scaledown_window, o.timeout,
            o.startup_timeout) == (2, 5, 1, 120, 30, 10)


def test_min_greater_than_max(app: modal.App) -> None:
    with pytest.raises(InvalidError) as e:
        _web(app, min_containers=3, max_containers=2)
    assert str(e.value) == "`min_containers` (3) cannot be greater than `max_containers` (2)"


def test_min_containers_must_be_an_int(app: modal.App) -> None:
    with pytest.raises(InvalidError, match="^`min_containers` must be an int, not str$"):
        _web(app, min_containers="1")


@pytest.mark.parametrize("value", [0, 1, 3601, 10_000])
def test_scaledown_window_out_of_range(app: modal.App, value: int) -> None:
    with pytest.raises(InvalidError, match=r"^`scaledown_window` must be between 2 and 3600 \(inclusive\)$"):
        _web(app, scaledown_window=value)


@pytest.mark.parametrize("value", [2, 3600])
def test_scaledown_window_bounds_are_inclusive(app: modal.App, value: int) -> None:
    assert _web(app, scaledown_window=value).options.scaledown_window == value


def test_timeout_none(app: modal.App) -> None:
    with pytest.raises(InvalidError) as e:
        _web(app, timeout=None)
    assert str(e.value) == "The `timeout` parameter cannot be set to None: https://modal.com/docs/guide/timeouts"


def test_target_inputs_above_max_inputs() -> None:
    with pytest.raises(InvalidError, match="^`target_inputs` parameter cannot be greater than `max_inputs`.$"):
        modal.concurrent(max_inputs=2, target_inputs=3)


def test_concurrent_in_either_order(app: modal.App) -> None:
    above = app.function()(modal.concurrent(max_inputs=10, target_inputs=4)(modal.fastapi_endpoint()(lambda: 1)))
    below = app.function(name="b")(modal.fastapi_endpoint()(modal.concurrent(max_inputs=7)(lambda: 1)))
    assert (above.options.max_inputs, above.options.target_inputs) == (10, 4)
    assert (below.options.max_inputs, below.options.target_inputs) == (7, 7)


def test_concurrent_without_max_inputs_fails_at_app_function(app: modal.App) -> None:
    pf = modal.concurrent()(modal.fastapi_endpoint()(lambda: 1))  # the decorator itself accepts it
    with pytest.raises(TypeError) as e:
        app.function()(pf)
    assert str(e.value) == "`@modal.concurrent()` missing required argument: `max_inputs`."


def test_concurrent_without_max_inputs_fails_at_app_cls(app: modal.App) -> None:
    class Model:
        @modal.fastapi_endpoint()
        def web(self):
            return 1

    pf = modal.concurrent()(Model)
    with pytest.raises(TypeError, match=r"^`@modal.concurrent\(\)` missing required argument: `max_inputs`.$"):
        app.cls()(pf)


def test_concurrent_on_a_class_sets_class_options(app: modal.App) -> None:
    @app.cls()
    @modal.concurrent(max_inputs=6, target_inputs=3)
    class Model:
        @modal.fastapi_endpoint()
        def web(self):
            return 1

    assert (Model.options.max_inputs, Model.options.target_inputs) == (6, 3)
    assert app._classes["Model"] is Model


def test_concurrent_on_a_method(app: modal.App) -> None:
    with pytest.raises(InvalidError) as e:
        @app.cls()
        class Model:
            @modal.concurrent(max_inputs=3)
            @modal.fastapi_endpoint()
            def web(self):
                return 1
    assert str(e.value) == "The `@modal.concurrent` decorator cannot be used on methods; decorate the class instead."


def test_concurrent_twice() -> None:
    with pytest.raises(InvalidError, match="twice"):
        modal.concurrent(max_inputs=2)(modal.concurrent(max_inputs=3)(lambda: 1))


# ---------------------------------------------------------------- old knob names (the seed keeps them)


@pytest.mark.parametrize("old,new,value", [
    ("keep_warm", "min_containers", 2),
    ("concurrency_limit", "max_containers", 4),
    ("container_idle_timeout", "scaledown_window", 90),
])
def test_renamed_knobs_warn_and_map(app: modal.App, old: str, new: str, value: int) -> None:
    with pytest.warns(DeprecationError, match=f"The '{old}' parameter has been renamed to '{new}'"):
        fn = _web(app, **{old: value})
    assert getattr(fn.options, new) == value
    assert fn.options.extra == {old: value}


def test_renamed_knob_is_validated_under_its_new_name(app: modal.App) -> None:
    with pytest.warns(DeprecationError), pytest.raises(InvalidError, match="scaledown_window"):
        _web(app, container_idle_timeout=1)


def test_old_and_new_name_together(app: modal.App) -> None:
    with pytest.warns(DeprecationError), pytest.raises(InvalidError, match="keep only 'min_containers'"):
        _web(app, keep_warm=1, min_containers=2)


def test_allow_concurrent_inputs_warns_and_maps(app: modal.App) -> None:
    with pytest.warns(DeprecationError, match="'allow_concurrent_inputs' parameter is deprecated. Use the "
                                              "'@modal.concurrent' decorator instead"):
        fn = _web(app, allow_concurrent_inputs=12)
    assert (fn.options.max_inputs, fn.options.target_inputs) == (12, 12)


def test_allow_concurrent_inputs_on_a_class(app: modal.App) -> None:
    class Model:
        @modal.fastapi_endpoint()
        def web(self):
            return 1

    with pytest.warns(DeprecationError):
        c = app.cls(allow_concurrent_inputs=3, keep_warm=1)(Model)
    assert (c.options.max_inputs, c.options.min_containers) == (3, 1)


def test_deprecation_warning_points_at_the_users_line(app: modal.App) -> None:
    with pytest.warns(DeprecationError) as record:
        _web(app, keep_warm=1)
    assert record[0].filename == __file__


def test_web_endpoint_is_an_alias_with_a_warning(app: modal.App) -> None:
    with pytest.warns(DeprecationError) as record:
        deco = modal.web_endpoint(method="POST", label="old")
    assert issubclass(DeprecationError, UserWarning)
    assert "`@modal.web_endpoint` decorator has been renamed to `@modal.fastapi_endpoint`" in str(record[0].message)
    fn = app.function()(deco(lambda: 1))
    assert (fn.web.kind, fn.web.method, fn.web.label, fn.web.decorator) == ("fastapi", "POST", "old", "web_endpoint")
    assert fn.web.deprecated_alias


def test_max_inputs_keyword_means_single_use(app: modal.App) -> None:
    with pytest.warns(DeprecationError, match="single_use_containers=True"):
        fn = _web(app, max_inputs=1)
    assert fn.options.single_use_containers and fn.options.max_inputs == 1
    with pytest.raises(InvalidError, match=r"^Only `max_inputs=1` is currently supported$"):
        _web(app, max_inputs=2)


# ---------------------------------------------------------------- positional arguments, missing parentheses


@pytest.mark.parametrize("call,message", [
    (lambda: modal.fastapi_endpoint(lambda: 1), "_fastapi_endpoint() takes 0 positional arguments but 1 was given"),
    (lambda: modal.fastapi_endpoint("GET"), "_fastapi_endpoint() takes 0 positional arguments but 1 was given"),
    (lambda: modal.asgi_app("baz"), "_asgi_app() takes 0 positional arguments but 1 was given"),
    (lambda: modal.wsgi_app(lambda: 1), "_wsgi_app() takes 0 positional arguments but 1 was given"),
    (lambda: modal.method(lambda s: 1), "_method() takes 0 positional arguments but 1 was given"),
    (lambda: modal.enter(lambda s: 1), "_enter() takes 0 positional arguments but 1 was given"),
    (lambda: modal.exit(lambda s: 1), "_exit() takes 0 positional arguments but 1 was given"),
    (lambda: modal.concurrent(lambda: 1), "_concurrent() takes 0 positional arguments but 1 was given"),
    (lambda: modal.batched(lambda: 1), "_batched() takes 0 positional arguments but 1 was given"),
])
def test_positional_arguments_are_a_type_error(call, message: str) -> None:
    with pytest.raises(TypeError) as e:
        call()
    assert str(e.value) == message


@pytest.mark.parametrize("attr", ["function", "cls", "local_entrypoint"])
def test_app_decorators_without_parentheses(app: modal.App, attr: str) -> None:
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        getattr(app, attr)(lambda: 1)


# ---------------------------------------------------------------- classes


def test_class_records(app: modal.App) -> None:
    @app.cls(min_containers=1)
    class MyAPI:
        @modal.enter()
        def load(self):
            self.loaded = True

        @modal.exit()
        def bye(self):
            pass

        @modal.fastapi_endpoint()
        def health(self):
            return 1

        @modal.asgi_app(label="x")
        def api(self):
            return None

        @modal.method()
        def compute(self, x):
            return x

    assert [m.name for m in MyAPI.web_methods()] == ["health", "api"]
    assert [m.name for m in MyAPI.enter_methods()] == ["load"]
    assert [m.name for m in MyAPI.exit_methods()] == ["bye"]
    assert MyAPI.methods["compute"].is_method and MyAPI.methods["health"].source.line > 0
    assert app.registered_web_endpoints == ["MyAPI.health", "MyAPI.api"]
    assert MyAPI.tag == "MyAPI" and MyAPI.user_cls.__name__ == "MyAPI" and MyAPI.options.min_containers == 1


def test_snap_enter_requires_memory_snapshot(app: modal.App) -> None:
    class Model:
        @modal.enter(snap=True)
        def early(self):
            pass

        @modal.enter()
        def late(self):
            pass

    with pytest.raises(InvalidError) as e:
        app.cls()(Model)
    assert str(e.value) == "A class must have `enable_memory_snapshot=True` to use `snap=True` on its methods."
    c = app.cls(enable_memory_snapshot=True)(Model)
    assert [m.name for m in c.enter_methods()] == ["early", "late"]


@pytest.mark.parametrize("inherited", [False, True])
def test_custom_init_is_refused(app: modal.App, inherited: bool) -> None:
    class Base:
        def __init__(self, x=1):
            self.x = x

    if inherited:
        class Model(Base):
            pass
    else:
        class Model:
            def __init__(self):
                pass

    with pytest.raises(InvalidError) as e:
        app.cls()(Model)
    assert "Modal class Model cannot have a custom constructor (__init__) method." in str(e.value)
    assert "@modal.enter()" in str(e.value)


def test_parameters_are_recorded(app: modal.App) -> None:
    @app.cls()
    class Model:
        name: str = modal.parameter()
        size: int = modal.parameter(default=3)
        flag: bool = modal.parameter(default=False)
        raw: bytes = modal.parameter(default=b"")

        @modal.fastapi_endpoint()
        def web(self):
            return self.name

    assert Model.parameters == {
        "name": ParameterInfo("name", str),
        "size": ParameterInfo("size", int, 3),
        "flag": ParameterInfo("flag", bool, False),
        "raw": ParameterInfo("raw", bytes, b""),
    }
    inst = Model.instantiate({"name": "a"})
    assert (inst.name, inst.size, inst.flag) == ("a", 3, False)
    with pytest.raises(AttributeError):
        _ = Model.instantiate().name  # no value and no default
    assert Model.parse_parameters({"name": "bob", "size": "7", "flag": "true"}) == {
        "name": "bob", "size": 7, "flag": True
    }
    with pytest.raises(ValueError, match="missing required parameter 'name'"):
        Model.parse_parameters({})
    with pytest.raises(ValueError, match="size"):
        Model.parse_parameters({"name": "x", "size": "big"})


def test_parameter_must_be_annotated(app: modal.App) -> None:
    class Model:
        name = modal.parameter()

    with pytest.raises(InvalidError, match="^All modal.parameter\\(\\) specifications need to be type-annotated$"):
        app.cls()(Model)


def test_parameter_type_must_be_supported(app: modal.App) -> None:
    class Model:
        x: float = modal.parameter()

    with pytest.raises(InvalidError) as e:
        app.cls()(Model)
    assert str(e.value) == (
        "Class parameter 'x': float is not a supported modal.parameter() type. Use one of: int, str, bytes, bool"
    )


def test_class_constructor_is_keyword_only(app: modal.App) -> None:
    @app.cls()
    class Model:
        name: str = modal.parameter(default="a")

        @modal.method()
        def hi(self):
            return self.name

    with pytest.raises(InvalidError, match="Can't use positional arguments"):
        Model("x")
    with pytest.raises(TypeError, match="unexpected keyword argument 'other'"):
        Model(other=1)
    assert Model(name="b").hi.remote() == "b"


def test_app_cls_on_a_function(app: modal.App) -> None:
    with pytest.raises(TypeError, match="^The @app.cls decorator must be used on a class.$"):
        app.cls()(lambda: 1)


def test_local_call_runs_enter_once(app: modal.App) -> None:
    calls: list[str] = []

    @app.cls()
    class Model:
        @modal.enter()
        def setup(self):
            calls.append("enter")
            self.ready = True

        @modal.method()
        def predict(self, x):
            return (self.ready, x)

        @modal.fastapi_endpoint()
        def web(self):
            return "web"

    obj = Model()
    assert obj.predict.local(1) == (True, 1)
    assert obj.predict.remote(2) == (True, 2)
    assert obj.web.local() == "web"
    # .local() entered this handle's instance; .remote() runs on the instance its "container" shares
    # with every handle of the same parameters, entered once.
    assert calls == ["enter", "enter"]
    assert Model().predict.remote(3) == (True, 3)
    assert calls == ["enter", "enter"]
    with pytest.raises(InvalidError, match="A webhook function cannot be invoked for remote execution with `.remote`"):
        obj.web.remote()


def test_cls_keeps_static_attributes_but_not_methods(app: modal.App) -> None:
    @app.cls()
    class Model:
        VERSION = 3

        @modal.method()
        def f(self):
            return 1

    assert Model.VERSION == 3
    with pytest.raises(AttributeError, match="Did you forget to instantiate the class first"):
        _ = Model.f


def test_instantiate_does_not_run_init_and_methods_stay_plain(app: modal.App) -> None:
    @app.cls()
    class Model:
        @modal.fastapi_endpoint()
        def web(self):
            return self

    inst = Model.instantiate()
    assert isinstance(inst, Model.user_cls)
    assert inst.web() is inst  # a replica calls the bound raw method


# ---------------------------------------------------------------- calling functions


def test_local_remote_spawn_map(app: modal.App) -> None:
    def double(x):
        return x * 2

    async def adouble(x):
        return x * 2

    f = app.function(serialized=True)(double)
    g = app.function(serialized=True)(adouble)
    assert f.local(2) == 4 and f.remote(3) == 6 and f.spawn(4).get() == 8
    assert list(f.map([1, 2, 3])) == [2, 4, 6]
    assert list(f.starmap([(1,), (5,)])) == [2, 10]
    assert g.remote(5) == 10
    assert asyncio.run(g.remote.aio(6)) == 12
    assert asyncio.run(f.remote.aio(7)) == 14


def test_spawn_keeps_the_error_for_get(app: modal.App) -> None:
    def boom():
        raise ValueError("nope")

    call = app.function(serialized=True)(boom).spawn()
    with pytest.raises(ValueError, match="nope"):
        call.get()


@pytest.mark.parametrize("how", ["remote", "spawn", "map"])
def test_web_functions_refuse_remote_execution(app: modal.App, how: str) -> None:
    fn = app.function()(modal.fastapi_endpoint()(lambda x=1: x))
    assert fn.local(5) == 5
    with pytest.raises(InvalidError) as e:
        result = getattr(fn, how)([1]) if how == "map" else getattr(fn, how)()
        list(result)
    assert str(e.value).startswith(f"A webhook function cannot be invoked for remote execution with `.{how}`.")
    assert f"call it locally: {fn.tag}.local()" in str(e.value)


def test_function_from_name_resolves_in_process() -> None:
    other = modal.App("lookup-target")

    def triple(x):
        return x * 3

    other.function(serialized=True, name="triple")(triple)
    assert modal.Function.from_name("lookup-target", "triple").remote(2) == 6
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("no-such-app", "f").remote()


# ---------------------------------------------------------------- App and the rest of the surface


def test_app_arguments_are_checked() -> None:
    with pytest.raises(InvalidError, match="^Invalid value for `name`: Must be string.$"):
        modal.App(123)
    with pytest.raises(InvalidError, match="has to be a `modal.Image` object"):
        modal.App(image="python:3.11")
    with pytest.raises(InvalidError, match="has to be a list or tuple of `modal.Secret` objects"):
        modal.App(secrets=modal.Secret.from_dict({"A": "1"}))


def test_app_level_secrets_volumes_and_image_reach_functions() -> None:
    image = modal.Image.debian_slim(python_version="3.11").pip_install("fastapi").env({"A": "1"})
    vol = modal.Volume.from_name("data", create_if_missing=True)
    app = modal.App("res", image=image, secrets=[modal.Secret.from_dict({"S": "1"})], volumes={"/data": vol})
    fn = app.function(env={"E": "2"}, secrets=[modal.Secret.from_name("named")])(modal.fastapi_endpoint()(lambda: 1))
    assert fn.options.image is image and image.env_vars == {"A": "1"}
    assert [s.values for s in fn.options.secrets] == [{"S": "1"}, {}]
    assert fn.options.env == {"E": "2"} and fn.options.volumes == {"/data": vol}


def test_image_chains_and_swallows_imports() -> None:
    image = (
        modal.Image.from_registry("python:3.12-slim", add_python=None)
        .apt_install("git")
        .uv_pip_install("torch")
        .run_commands("echo hi")
        .add_local_dir(".", "/root")
        .workdir("/root")
    )
    assert [c[0] for c in image.calls] == [
        "from_registry", "apt_install", "uv_pip_install", "run_commands", "add_local_dir", "workdir"
    ]
    with pytest.warns(UserWarning, match="swallowed ModuleNotFoundError"):
        with image.imports():
            import mwtui_no_such_module  # noqa: F401
    assert isinstance(image.import_errors[0], ModuleNotFoundError)


def test_other_resources_import_and_chain(mwtui_home: Path) -> None:
    d = modal.Dict.from_name("cache", create_if_missing=True)
    d["a"] = 1
    assert d.get("a") == 1 and "a" in d and d.len() == 1
    q = modal.Queue.from_name("q")
    q.put(1)
    q.put_many([2, 3])
    assert q.get() == 1 and q.get_many(5) == [2, 3] and q.len() == 0
    modal.NetworkFileSystem.from_name("nfs")
    modal.CloudBucketMount("bucket", read_only=True)
    modal.Cron("0 * * * *", timezone="Europe/Paris")
    modal.Secret.from_dotenv(filename=".env.dev")
    with modal.Volume.ephemeral() as v:
        v.commit()
        v.reload()
    with modal.enable_output(), modal.forward(8000) as tunnel:
        assert tunnel.url == "http://127.0.0.1:8000"
    assert modal.is_local() is True
    assert modal.current_input_id() is None and modal.current_function_call_id() is None


def test_batched(app: modal.App) -> None:
    @app.function(serialized=True)
    @modal.batched(max_batch_size=4, wait_ms=100)
    def mul(xs: list[int]) -> list[int]:
        return [x * 2 for x in xs]

    assert mul.local([1, 2]) == [2, 4]
    with pytest.raises(InvalidError, match="^max_batch_size must be a positive integer.$"):
        modal.batched(max_batch_size=0, wait_ms=1)


def test_include_merges_endpoints() -> None:
    a = modal.App("a")
    b = modal.App("b")
    b.function(name="other")(modal.fastapi_endpoint()(lambda: 1))
    assert a.include(b) is a
    assert "other" in a._functions and a.registered_web_endpoints == ["other"]


def test_local_entrypoint_registers_and_refuses_duplicates(app: modal.App) -> None:
    def main():
        return "ran"

    entry = app.local_entrypoint(name="main")(main)
    assert entry() == "ran" and "main" in app.registered_entrypoints
    with pytest.raises(InvalidError, match="Duplicate local entrypoint name: main"):
        app.local_entrypoint(name="main")(main)


def test_function_name_collision_only_warns(app: modal.App) -> None:
    _web(app, name="same")
    with pytest.warns(UserWarning, match="function name 'same' collision"):
        _web(app, name="same")


def test_stub_is_gone() -> None:
    with pytest.raises(AttributeError, match="Use `modal.App` instead"):
        _ = modal.Stub


def test_options_defaults_match_modal() -> None:
    o = Options()
    assert (o.min_containers, o.max_containers, o.buffer_containers, o.scaledown_window, o.timeout,
            o.max_inputs, o.target_inputs) == (0, None, 0, 60, 300, 1, 1)


# ---------------------------------------------------------------- through discover(): file and line reach the person


def _write(tmp_path: Path, body: str, name: str = "app.py") -> AppRef:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return AppRef(str(path))


def test_rule_through_discovery_names_file_line_and_function(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.function()
        @modal.asgi_app()
        async def make_app():
            return None
        """)
    err = discover(ref).error
    assert err is not None and (err.file, err.line) == (ref.path, 5)
    assert err.message == (
        "app.py:5 (`make_app`): The `@modal.asgi_app` decorator can't be applied to an async function."
    )


def test_knob_rule_through_discovery(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.cls(min_containers=3, max_containers=2)
        class Model:
            @modal.fastapi_endpoint()
            def web(self):
                return 1
        """)
    err = discover(ref).error
    assert err is not None and err.line == 4
    assert err.message == "app.py:4 (`Model`): `min_containers` (3) cannot be greater than `max_containers` (2)"


def test_missing_parentheses_through_discovery(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("x")

        @app.function()
        @modal.fastapi_endpoint
        def hello():
            return 1
        """)
    err = discover(ref).error
    assert err is not None and err.line == 5
    assert "app.py:5 (`hello`): _fastapi_endpoint() takes 0 positional arguments but 1 was given" in err.message
    assert "Did you forget the parentheses? Write `@modal.fastapi_endpoint()`" in err.message


def test_deprecations_through_discovery(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        app = modal.App("old")

        @app.function(keep_warm=1, concurrency_limit=3, container_idle_timeout=30, allow_concurrent_inputs=4)
        @modal.web_endpoint(method="POST")
        def legacy(data: dict):
            return data
        """)
    m = discover(ref)
    assert m.error is None
    assert m.warnings == (
        "app.py:4: 2025-02-24: The 'keep_warm' parameter has been renamed to 'min_containers'.",
        "app.py:4: 2025-02-24: The 'concurrency_limit' parameter has been renamed to 'max_containers'.",
        "app.py:4: 2025-02-24: The 'container_idle_timeout' parameter has been renamed to 'scaledown_window'.",
        "app.py:4: 2025-04-09: The 'allow_concurrent_inputs' parameter is deprecated. Use the '@modal.concurrent' "
        "decorator instead.",
        "app.py:5: 2025-03-05: The `@modal.web_endpoint` decorator has been renamed to `@modal.fastapi_endpoint`.",
    )
    (ep,) = m.endpoints
    assert (ep.kind, ep.method, ep.deprecated_alias) == ("fastapi", "POST", True)
    assert (ep.min_containers, ep.max_containers, ep.scaledown_window, ep.max_inputs, ep.target_inputs) == (
        1, 3, 30, 4, 4
    )


def test_modal_submodules_import_through_discovery(tmp_path: Path) -> None:
    ref = _write(tmp_path, """\
        import modal
        import modal.app
        from modal.exception import InvalidError
        from modal.image import Image
        from modal.partial_function import fastapi_endpoint

        assert modal.app.App is modal.App and Image is modal.Image and InvalidError is modal.InvalidError
        app = modal.App("subs")

        @app.function()
        @fastapi_endpoint()
        def hello():
            return 1
        """)
    m = discover(ref)
    assert m.error is None and [e.name for e in m.endpoints] == ["hello"]


def test_unknown_modal_submodule_is_named(tmp_path: Path) -> None:
    ref = _write(tmp_path, "import modal.runner\n")
    err = discover(ref).error
    assert err is not None and err.line == 1
    assert "modal.runner" in err.message and "pip install" not in err.message
