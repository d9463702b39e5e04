"""What one replica serves: a web function, or a class with all its web methods, found in the App.

The pool owns the class instance (one per replica, as one per Modal container), so that state set in
`@enter` or changed by one method is seen by every other method. For a parametrized class, the
replica's parameter values (`--params`) go into that instance.

It also gives the replica its "container": environment variables (image ENV, secrets, `env=`) and
mount paths (volumes, `add_local_*`). `before_import` sets them from discovery's plan, before the app
file runs, as Modal does; `Pool.resolve` sets them again from the imported objects, and fails the
replica with a clear message when a secret cannot be provided.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import os
import sys
import traceback
import types
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..loader import AppNotFound, AppRef, load_app
from ..manifest import EndpointSpec, PoolServer, pool_server
from ..params import ParamError, decode
from ..sdk import environment, runtime
from ..sdk.exception import Error as ModalError
from ..sdk.model import Options, WebConfig
from .report import StartupFailure, failure, format_traceback

RunAsync = Callable[[Awaitable[Any]], Any]
CALLS = WebConfig(kind="call", decorator="method")  # how other pools reach a function or a class's methods


@dataclass
class Endpoint:
    name: str  # "hello", or "MyAPI.web" for a class method
    web: WebConfig
    target: Callable[..., Any]  # the user's function, or the method bound to the pool's instance

    @property
    def subject(self) -> str:
        return f"endpoint `{self.name}`"


def subject_before_import(app_file: str, name: str) -> str:
    """How to name the pool when the file did not import: look for `class NAME` in its source."""
    try:
        with open(app_file, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return f"endpoint `{name}`"
    is_class = any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body)
    return f"class `{name}`" if is_class else f"endpoint `{name}`"


def _say(problems: list[str], subject: str) -> None:
    for p in problems:
        print(f"mwtui: {subject}: {p}", file=sys.stderr)


def before_import(pool_name: str, app_file: str) -> None:
    """Name the pool this replica serves, and put its environment and mounts in place from the plan in
    MWTUI_POOL_PLAN (made by discovery), so that module-level code sees them as on Modal. Without a
    plan, the sdk sets them as the import registers the pool (see `sdk.runtime`)."""
    runtime.serve_pool(pool_name)
    raw = os.environ.pop(runtime.POOL_PLAN_ENV, None)  # user code and its subprocesses need not see it
    if not raw:
        return
    subject = subject_before_import(app_file, pool_name)
    try:
        plan = json.loads(raw)
        problems = environment.apply_plan(plan, pool_name)
    except ValueError as exc:
        print(f"mwtui: {subject}: ignoring an unreadable {runtime.POOL_PLAN_ENV} ({exc})", file=sys.stderr)
        return
    except ModalError as exc:
        endpoint = pool_name if subject.startswith("endpoint") else None
        raise StartupFailure("import", endpoint, f"{subject}: {exc}", f"{type(exc).__name__}: {exc}\n") from exc
    _say(problems, subject)


def callable_methods(klass: Any) -> dict[str, Any]:
    """A class's methods other pools may call (`@modal.method`), by name: what its call endpoint serves."""
    return klass.call_methods()  # type: ignore[no-any-return]


@contextlib.contextmanager
def import_warnings_told_once(supervised: bool) -> Iterator[None]:
    """Under mwtui's supervisor (`supervised`: it reports to mwtui), the warnings the app's import raises (a deprecated decorator, say) were
    told once for this generation by discovery, which imported the same file; a replica importing it
    again must not repeat them once per replica and again on every restart. Run by hand (`mwtui
    worker`, a container) nothing else tells them: they show as usual."""
    if not supervised:
        yield
        return
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


def import_app(ref: AppRef, pool_name: str, supervised: bool) -> Any:
    """Import the app file for pool `pool_name`, its environment put in place first (`before_import`);
    any failure is a StartupFailure that says, for a person, what went wrong and where."""
    before_import(pool_name, ref.path)  # raises StartupFailure for a missing secret
    try:
        with import_warnings_told_once(supervised):
            _, app = load_app(ref)
    except AppNotFound as exc:
        raise StartupFailure("import", None, str(exc), format_traceback(exc)) from exc
    except (Exception, SystemExit) as exc:
        subject = subject_before_import(ref.path, pool_name)
        endpoint = pool_name if subject.startswith("endpoint") else None
        lead = f"importing {os.path.basename(ref.path)} raised"
        raise failure("import", endpoint, subject, lead, exc, ref.path) from exc
    return app


def _call(fn: Callable[..., Any], run_async: RunAsync, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = run_async(result)
    return result


class Pool:
    def __init__(
        self,
        name: str,
        app_file: str,
        options: Options,
        endpoints: list[Endpoint],
        cls: Any = None,
        instance: Any = None,
    ) -> None:
        self.name = name
        self.app_file = app_file
        self.options = options
        self.endpoints = endpoints
        self.cls = cls  # sdk.Cls, for a class pool
        self.instance = instance
        self.entered = False
        self.snapped = False  # its snap=True enters ran (in the snapshot it was forked from)
        self.env: dict[str, str] | None = None  # resolved by `prepare`

    @classmethod
    def resolve(cls, app: Any, name: str, app_file: str, params: dict[str, Any] | None = None) -> Pool:
        """Find NAME among the App's web functions and classes, and prepare its environment; fail
        (stage "import") if it is not there or its secrets cannot be provided. `params` are the
        parameter values of a parametrized class, in JSON form (see `mwtui.engine.params`)."""
        fn = app._functions.get(name)
        if fn is not None:
            if params:
                raise StartupFailure("import", name, f"endpoint `{name}` is a function: it takes no --params")
            pool = cls(name, app_file, fn.options, [Endpoint(name, fn.web or CALLS, fn.raw_f)])
            pool.prepare()
            return pool
        klass = app._classes.get(name)
        if klass is not None and (klass.web_methods() or callable_methods(klass)):
            try:
                values = decode(klass.parameter_specs(), params or {})
            except ParamError as exc:
                raise StartupFailure("import", None, f"class `{name}`: {exc}") from exc
            missing = [p.name for p in klass.parameters.values() if p.required and p.name not in values]
            if missing:
                example = "&".join(f"{m}=..." for m in missing)
                raise StartupFailure("import", None, (
                    f"class `{name}` needs a value for its parameter(s) {', '.join(missing)}: each set of values "
                    f"is served by replicas of its own, made when a request gives them (?{example})"))
            instance = klass.instantiate(values)
            endpoints = [
                Endpoint(f"{name}.{m.name}", m.web, types.MethodType(m.raw_f, instance))
                for m in klass.web_methods()
                if m.web is not None
            ]
            if callable_methods(klass):  # its @modal.methods, called by other pools: one endpoint for all
                endpoints.append(Endpoint(name, CALLS, instance))
            pool = cls(name, app_file, klass.options, endpoints, klass, instance)
            pool.prepare()
            return pool
        known = sorted([*app._functions, *(t for t, c in app._classes.items() if c.web_methods() or callable_methods(c))])
        what = "has no web endpoint nor @modal.method" if klass else "is not defined"
        raise StartupFailure(
            "import", None,
            f"`{name}` {what} in {os.path.basename(app_file)}; its functions and classes are: "
            f"{', '.join(known) or 'none'}",
        )

    def prepare(self) -> None:
        """The container's environment and mounts, from the imported objects."""
        try:
            env = environment.function_env(self.options, self.name)
        except ModalError as exc:
            raise StartupFailure("import", self.failure_endpoint, f"{self.subject}: {exc}",
                                 f"{type(exc).__name__}: {exc}\n") from exc
        mount_env, problems = environment.provide(environment.mounts_of(self.options, create=True))
        _say(problems, self.subject)
        self.env = {**env, **mount_env}

    @property
    def is_class(self) -> bool:
        return self.cls is not None

    @property
    def subject(self) -> str:
        return f"class `{self.name}`" if self.is_class else f"endpoint `{self.name}`"

    @property
    def failure_endpoint(self) -> str | None:
        """The "endpoint" of a pool-wide failure: the function's own name; none for a class."""
        return None if self.is_class else self.name

    def server(self) -> PoolServer:
        specs = [EndpointSpec(name=e.name, pool=self.name, kind=e.web.kind, label="") for e in self.endpoints]
        return pool_server(specs)

    def environment(self) -> dict[str, str]:
        """The function's environment as on Modal: the image's ENV, then its secrets (app-level first),
        then `env=` (which Modal turns into one more secret); and MWTUI_VOLUME_* for its volumes."""
        if self.env is None:
            self.prepare()
        assert self.env is not None
        return dict(self.env)

    def check_image_imports(self) -> None:
        """Modal swallows a failed import inside `with image.imports():` locally and re-raises it in
        the container whose image it is: here."""
        errors = getattr(self.options.image, "import_errors", None) or []
        if errors:
            exc = errors[0]
            raise failure("import", self.failure_endpoint, self.subject,
                          "an import inside `with image.imports():` raised", exc, self.app_file) from exc

    def enter(self, run_async: RunAsync, on_method: Callable[[str], None] | None = None, snap: bool = False) -> int:
        """Run the `@enter` methods in order; `on_method(what)` as each begins (startup progress).
        With `snap`, only the `snap=True` ones (a snapshot, before it forks replicas); without, the rest
        (all of them, unless a snapshot ran those already). Returns how many ran."""
        if not self.is_class:
            self.entered = not snap
            return 0
        methods = [m for m in self.cls.enter_methods() if (m.snap if snap else not (self.snapped and m.snap))]
        for m in methods:
            if on_method is not None:
                on_method(f"running @modal.enter method `{m.name}`")
            try:
                _call(types.MethodType(m.raw_f, self.instance), run_async)
            except (Exception, SystemExit) as exc:
                raise failure("enter", None, self.subject, f"@modal.enter method `{m.name}` raised", exc,
                              self.app_file) from exc
        if snap:
            self.snapped = True
        else:
            self.entered = True
        return len(methods)

    def exit(self, run_async: RunAsync) -> bool:
        """Run the `@exit` methods (only once `@enter` has completed), each even if one before it
        failed. False if any failed; its traceback goes to stderr."""
        if not self.is_class or not self.entered:
            return True
        ok = True
        for m in self.cls.exit_methods():
            bound = types.MethodType(m.raw_f, self.instance)
            # Modal calls legacy `__exit__`-style methods with (None, None, None).
            args = (None, None, None) if _takes_three(m.raw_f) else ()
            try:
                _call(bound, run_async, *args)
            except Exception:
                ok = False
                print(f"mwtui: {self.subject}: @modal.exit method `{m.name}` raised:", file=sys.stderr)
                traceback.print_exc()
        return ok


def _takes_three(f: Callable[..., Any]) -> bool:
    try:
        params = [p for p in inspect.signature(f).parameters.values() if p.name != "self"]
    except (TypeError, ValueError):
        return False
    return len(params) == 3


def params_arg(text: str) -> dict[str, Any]:
    """`--params JSON`: a JSON object of parameter values (argparse type)."""
    import argparse

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--params must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--params must be a JSON object, e.g. '{\"name\": \"a\"}'")
    return value
