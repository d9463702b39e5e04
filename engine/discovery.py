"""Import an app file and return what it declares, as an `AppManifest`.

The import runs in the isolated child of engine/import_child.py (its own process group, killed on
timeout, forked from the zygote where there is one); its job here is `manifest_json`. Every failure
becomes a `LoadError` whose message is one paragraph for a person: file and line, what went wrong, and,
where it helps, what to do.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import import_child
from .labels import call_label, default_label, find_conflicts, label_warning
from .loader import AppNotFound, AppRef, load_app
from .manifest import AppManifest, EndpointSpec, LoadError

if TYPE_CHECKING:
    from .spawner import Spawner

WEB_DECORATORS = frozenset({"fastapi_endpoint", "web_endpoint", "asgi_app", "wsgi_app", "web_server"})

# Import names whose pip package is called something else.
PIP_NAMES = {
    "cv2": "opencv-python", "PIL": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image",
    "yaml": "pyyaml", "bs4": "beautifulsoup4", "dotenv": "python-dotenv", "jwt": "pyjwt",
    "dateutil": "python-dateutil", "attr": "attrs", "Crypto": "pycryptodome", "magic": "python-magic",
    "multipart": "python-multipart", "docx": "python-docx", "pptx": "python-pptx", "serial": "pyserial",
    "OpenSSL": "pyopenssl", "fitz": "pymupdf", "git": "gitpython", "zmq": "pyzmq", "usb": "pyusb",
    "telegram": "python-telegram-bot", "googleapiclient": "google-api-python-client",
}

_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))  # our own code is never "the user's"


# ---------------------------------------------------------------- parent side


def discover(
    ref: AppRef, timeout: float = 30.0, *, env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = ()
) -> AppManifest:
    """Blocking form of `discover_async` (always a cold child: a spawner lives on one event loop)."""
    early = _check_path(ref)
    if early is not None:
        return early
    return _manifest(ref, timeout, import_child.run_blocking(ref, "manifest", timeout, env=env, pass_fds=pass_fds,
                                                            stack_until=_finder(ref)))


async def discover_async(
    ref: AppRef,
    timeout: float = 30.0,
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    spawner: Spawner | None = None,
) -> AppManifest:
    """Import `ref` in the isolated child and return its manifest; never raises for a bad app file.
    `env`, `pass_fds` and `spawner` as for `import_child.run`."""
    early = _check_path(ref)
    if early is not None:
        return early
    done = await import_child.run(ref, "manifest", timeout, env=env, pass_fds=pass_fds, spawner=spawner,
                                  stack_until=_finder(ref))
    return _manifest(ref, timeout, done)


def _manifest(ref: AppRef, timeout: float, done: import_child.ChildResult) -> AppManifest:
    if done.timed_out:
        return _timeout_manifest(ref, timeout, _user_line(done.stack, ref))
    if done.payload:
        try:
            return AppManifest.from_json(_loads(done.payload))
        except ValueError:
            pass
    return _crash_manifest(ref, done.code, done.output)


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _user_line(stack: str, ref: AppRef) -> str | None:
    """`app.py:12`: the first line of the user's own code in a stack dump, if any."""
    folder = os.path.dirname(ref.path)
    for m in _FRAME.finditer(stack):
        if _is_user_file(m.group(1), folder):
            return f"{_rel(m.group(1), folder)}:{m.group(2)}"
    return None


def _finder(ref: AppRef) -> Callable[[str], bool]:
    return lambda stack: _user_line(stack, ref) is not None


def _check_path(ref: AppRef) -> AppManifest | None:
    name = os.path.basename(ref.path)
    if not os.path.exists(ref.path):
        message = f"no such file: {ref.path}"
    elif os.path.isdir(ref.path):
        message = f"{ref.path} is a directory; give the Python file that defines the modal.App, e.g. {name}/app.py"
    elif not ref.path.endswith(".py"):
        message = f"{name} is not a Python file: mwtui runs a Modal app file ending in .py"
    else:
        return None
    return AppManifest(app_name=ref.stem, file=ref.path, app_var=ref.var, error=LoadError(message, ref.path))


def _loads(payload: bytes) -> dict[str, Any]:
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("manifest is not an object")
    return data


def _timeout_manifest(ref: AppRef, timeout: float, where: str | None) -> AppManifest:
    name = os.path.basename(ref.path)
    at = f" (it was still running {where})" if where else ""
    message = (
        f"importing {name} did not finish within {timeout:g} s{at}, so it was stopped. Code that runs at "
        f"import time must return: start servers inside @modal.web_server or @modal.enter functions, not "
        f"at module level."
    )
    file, line = _split_location(where, ref)
    return AppManifest(app_name=ref.stem, file=ref.path, app_var=ref.var, error=LoadError(message, file, line))


def _crash_manifest(ref: AppRef, code: int | None, output: str) -> AppManifest:
    name = os.path.basename(ref.path)
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    message = f"importing {name} {how} before discovery finished" + (f"; last output: {last}" if last else ".")
    return AppManifest(
        app_name=ref.stem, file=ref.path, app_var=ref.var, error=LoadError(message, ref.path, None, output)
    )


def _split_location(where: str | None, ref: AppRef) -> tuple[str, int | None]:
    if not where:
        return ref.path, None
    file, _, line = where.rpartition(":")
    return os.path.join(os.path.dirname(ref.path), file), int(line)


# ---------------------------------------------------------------- paths and source


def _rel(path: str, folder: str) -> str:
    """A path as the user thinks of it: relative to the app's folder when inside it."""
    absolute = os.path.abspath(path)
    if absolute.startswith(folder.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, folder)
    return path


def _is_user_file(path: str, folder: str) -> bool:
    """The user's own code: under the app's folder, but not an installed package nor mwtui's engine."""
    if path.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    absolute = os.path.abspath(path)
    if not absolute.startswith(folder.rstrip(os.sep) + os.sep) or absolute.startswith(_ENGINE_DIR + os.sep):
        return False
    parts = absolute.split(os.sep)
    return "site-packages" not in parts and "dist-packages" not in parts


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class _Frame:
    file: str
    line: int
    code: str


def _user_frames(tb: Any, folder: str) -> list[_Frame]:
    return [
        _Frame(f.filename, f.lineno or 0, (f.line or "").strip())
        for f in traceback.extract_tb(tb)
        if _is_user_file(f.filename, folder)
    ]


class _Source:
    """One Python file's syntax tree, for naming what a line belongs to."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.tree: ast.Module | None = ast.parse(f.read(), path)
        except (OSError, SyntaxError, ValueError):
            self.tree = None

    def definitions(self) -> list[tuple[str, ast.AST, int, int]]:
        """(qualified name, node, first line incl. decorators, last line) of every def and class."""
        out: list[tuple[str, ast.AST, int, int]] = []

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                    out.append((name, child, start, child.end_lineno or child.lineno))
                    walk(child, f"{name}.")
                else:
                    walk(child, prefix)

        if self.tree is not None:
            walk(self.tree, "")
        return out

    def enclosing(self, line: int) -> str | None:
        """The innermost function or class whose decorators or body hold `line`."""
        best: tuple[int, str] | None = None
        for name, _node, start, end in self.definitions():
            if start <= line <= end and (best is None or start >= best[0]):
                best = (start, name)
        return best[1] if best else None

    def endpoints(self) -> list[tuple[str, ast.AST]]:
        """Web endpoints as written: functions with a web decorator, and such methods of classes."""
        return [
            (name, node)
            for name, node, _s, _e in self.definitions()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _has_web_decorator(node)
        ]

    def importers(self, package: str) -> tuple[bool, list[tuple[int, int]]]:
        """Whether `package` is imported at module level, and the line spans of defs/classes importing it."""
        top_level = False
        spans: list[tuple[int, int]] = []
        if self.tree is None:
            return top_level, spans
        inside = [(s, e) for _n, _node, s, e in self.definitions()]
        for node in ast.walk(self.tree):
            if not _imports_package(node, package):
                continue
            line = getattr(node, "lineno", 0)
            holders = [(s, e) for s, e in inside if s <= line <= e]
            if holders:
                spans.append(max(holders))  # the innermost holder starts last
            else:
                top_level = True
        return top_level, spans


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Name):
        return target.id
    return ""


def _has_web_decorator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(_decorator_name(d) in WEB_DECORATORS for d in node.decorator_list)


def _imports_package(node: ast.AST, package: str) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == package for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] == package
    return False


# ---------------------------------------------------------------- child side: failures


def _modal_rule_broken(exc: BaseException, frames: list[_Frame]) -> bool:
    """An error from our `modal` (a decorator or knob Modal forbids), rather than from the user's code."""
    from .sdk.exception import DeprecationError, Error

    if isinstance(exc, (Error, DeprecationError)):
        return True
    if not isinstance(exc, (TypeError, AssertionError)):
        return False
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    sdk_dir = os.path.join(_ENGINE_DIR, "sdk") + os.sep
    if last and os.path.abspath(last[0].filename).startswith(sdk_dir):
        return True
    # A decorator called with the wrong arguments fails in the user's frame, on the decorator line.
    return bool(frames) and frames[-1].code.startswith("@")


def explain(exc: BaseException, ref: AppRef) -> LoadError:
    """Turn an exception raised while importing `ref` into a message for a person."""
    folder = os.path.dirname(ref.path)
    name = os.path.basename(ref.path)
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    frames = _user_frames(exc.__traceback__, folder)
    if isinstance(exc, SyntaxError) and exc.filename and _is_user_file(exc.filename, folder):
        return _explain_syntax(exc, ref, frames, tb_text)
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] != "modal":
        return _explain_missing(exc, ref, frames, tb_text)
    where = frames[-1] if frames else _Frame(ref.path, 0, "")
    loc = f"{_rel(where.file, folder)}:{where.line}" if where.line else name
    owner = _Source(where.file).enclosing(where.line) if where.line else None
    text = _one_paragraph(str(exc)) or type(exc).__name__
    if _modal_rule_broken(exc, frames):
        who = f" (`{owner}`)" if owner else ""
        message = f"{loc}{who}: {text}{_decorator_hint(exc, frames)}"
    else:
        who = f", in `{owner}`" if owner else ""
        message = f"{loc}{who}: importing {name} raised {type(exc).__name__}: {text}"
    return LoadError(message, where.file, where.line or None, tb_text)


def _decorator_hint(exc: BaseException, frames: list[_Frame]) -> str:
    """Modal 1.6.4 says only "takes 0 positional arguments"; 1.5.4 said what to write instead."""
    if not (isinstance(exc, TypeError) and "positional argument" in str(exc) and frames):
        return ""
    code = frames[-1].code
    if not code.startswith("@"):
        return ""
    if "(" not in code:
        return f". Did you forget the parentheses? Write `{code}()`."
    return ". Its arguments are keyword-only, e.g. `method=\"GET\"`."


def _explain_syntax(exc: SyntaxError, ref: AppRef, frames: list[_Frame], tb_text: str) -> LoadError:
    folder = os.path.dirname(ref.path)
    file = exc.filename or ref.path
    line = exc.lineno or 0
    code = (exc.text or "").strip()
    message = f"{_rel(file, folder)}:{line}: syntax error: {exc.msg}"
    if code:
        message += f" (line {line}: `{code}`)"
    if os.path.abspath(file) != ref.path and frames:
        via = frames[-1]
        message += f" (imported from {_rel(via.file, folder)}:{via.line})"
    return LoadError(message, file, line or None, tb_text)


def _explain_missing(exc: ModuleNotFoundError, ref: AppRef, frames: list[_Frame], tb_text: str) -> LoadError:
    folder = os.path.dirname(ref.path)
    name = os.path.basename(ref.path)
    package = (exc.name or "").split(".")[0]
    where = frames[-1] if frames else _Frame(ref.path, 0, "")
    main = _Source(ref.path)
    endpoints = [n for n, _node in main.endpoints()]
    top_level, spans = main.importers(package)
    main_frames = [f for f in frames if os.path.abspath(f.file) == ref.path]
    if main_frames and main.enclosing(main_frames[-1].line) is None:
        top_level = True  # the failing statement itself runs at module level
    needed = [
        n for n, node in main.endpoints()
        if top_level or any(s <= getattr(node, "lineno", 0) <= e for s, e in spans)
    ]
    if not endpoints:
        who = f"{name}"
    elif top_level:
        who = f"every endpoint in {name} ({', '.join(endpoints)}), since it is imported at module level"
    elif needed:
        who = ", ".join(f"`{n}`" for n in needed)
    else:
        who = name
    loc = f"{_rel(where.file, folder)}:{where.line}" if where.line else name
    via = ""
    if os.path.abspath(where.file) != ref.path and main_frames:
        via = f" (imported from {name}:{main_frames[-1].line})"
    pip = PIP_NAMES.get(package, package)
    message = (
        f"{loc}{via}: cannot import `{package}` ({exc}); it is needed by {who}. Install it where mwtui runs, "
        f"e.g. `pip install {pip}`."
    )
    return LoadError(message, where.file, where.line or None, tb_text)


# ---------------------------------------------------------------- child side: the manifest


def _format_warning(w: warnings.WarningMessage, folder: str) -> str:
    return f"{_rel(str(w.filename), folder)}:{w.lineno}: {_one_paragraph(str(w.message))}"


def _sort_key(spec: EndpointSpec, main_rel: str) -> tuple[int, str, int]:
    file, _, line = spec.source.rpartition(":")
    return (0 if file == main_rel else 1, file, int(line) if line.isdigit() else 0)


def build_manifest(ref: AppRef) -> AppManifest:
    """Import `ref` here (the child) and describe it. Never raises."""
    folder = os.path.dirname(ref.path)
    with warnings.catch_warnings(record=True) as caught:
        try:
            _module, app = load_app(ref)
        except AppNotFound as e:
            message = str(e).replace(ref.path, os.path.basename(ref.path))
            return AppManifest(ref.stem, ref.path, ref.var, error=LoadError(message, ref.path))
        except BaseException as e:  # noqa: BLE001 - SystemExit from user code is a failure like any other
            return AppManifest(ref.stem, ref.path, ref.var, warnings=_warnings(caught, folder), error=explain(e, ref))
    found = _warnings(caught, folder)
    return describe(app, ref, found)


def _warnings(caught: list[warnings.WarningMessage], folder: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_format_warning(w, folder) for w in caught))


def describe(app: Any, ref: AppRef, found_warnings: Sequence[str] = ()) -> AppManifest:
    """The manifest of an imported app (an `sdk.App`): one EndpointSpec per web function or method."""
    folder = os.path.dirname(ref.path)
    app_name = app.name or ref.stem
    main_rel = _rel(ref.path, folder)
    out_warnings = list(found_warnings)
    specs: list[EndpointSpec] = []

    def add(name: str, pool: str, web: Any, options: Any, source: Any, schedule: Any = None) -> None:
        if web is None:  # called by other pools: an internal label, no URL
            kind = "cls" if "." not in name and name in app._classes else "function"
            specs.append(EndpointSpec(
                name=name, pool=pool, kind=kind, label=call_label(app_name, pool), **knobs(options),
                source=f"{_rel(source.file, folder)}:{source.line}", schedule=schedule_json(schedule),
                retries=max_retries(options),
            ))
            return
        if web.label:
            label = web.label
            warning = label_warning(name, label)
            if warning:
                out_warnings.append(f"{_rel(source.file, folder)}:{source.line}: {warning}")
        else:
            label = default_label(app_name, name)
        specs.append(EndpointSpec(
            name=name,
            pool=pool,
            kind=web.kind,
            label=label,
            method=web.method.upper() if web.kind == "fastapi" else None,
            docs=web.docs if web.kind == "fastapi" else False,
            requires_proxy_auth=web.requires_proxy_auth,
            custom_domains=tuple(web.custom_domains),
            port=web.port if web.kind == "web_server" else None,
            startup_timeout=web.startup_timeout if web.kind == "web_server" else None,
            deprecated_alias=web.deprecated_alias,
            **knobs(options),
            source=f"{_rel(source.file, folder)}:{source.line}",
        ))

    for tag, fn in app._functions.items():
        add(tag, tag, fn.web, fn.options, fn.source, fn.schedule)
    for tag, cls in app._classes.items():
        for m in cls.web_methods():
            add(f"{tag}.{m.name}", tag, m.web, cls.options, m.source or cls.source)
        if cls.call_methods():  # one endpoint takes calls to all of them; listed where the first is
            first = next(iter(cls.call_methods().values()))
            add(tag, tag, None, cls.options, first.source or cls.source)
    specs.sort(key=lambda s: _sort_key(s, main_rel))
    if not specs:
        out_warnings.append(
            f"{main_rel}: the app defines no functions (@app.function) and no classes with methods (@app.cls)"
        )
    from .sdk.environment import app_report  # what this machine cannot give the "containers", and plans

    setup_warnings, plans = app_report(app)
    out_warnings += setup_warnings
    error = None
    conflicts = find_conflicts(specs)
    if conflicts:
        clash = next(s for s in reversed(specs) if any(f"`{s.name}`" in c for c in conflicts))
        file, _, line = clash.source.rpartition(":")
        error = LoadError(
            f"{clash.source}: " + " ".join(conflicts), os.path.join(folder, file), int(line) if line else None
        )
    return AppManifest(
        app_name=app_name,
        file=ref.path,
        app_var=ref.var,
        endpoints=tuple(specs),
        warnings=tuple(dict.fromkeys(out_warnings)),
        error=error,
        pool_plans=tuple(plans.items()),
    )


def knobs(options: Any) -> dict[str, Any]:
    """The pool-level knobs every endpoint of a pool repeats (see EndpointSpec)."""
    return {
        "min_containers": options.min_containers, "max_containers": options.max_containers,
        "buffer_containers": options.buffer_containers, "scaledown_window": options.scaledown_window,
        "timeout": options.timeout, "max_inputs": options.max_inputs, "target_inputs": options.target_inputs,
    }


def max_retries(options: Any) -> int:
    retries = options.extra.get("retries")
    return int(retries if isinstance(retries, int) else getattr(retries, "max_retries", 0) or 0)


def schedule_json(schedule: Any) -> dict[str, Any] | None:
    """`modal.Period(...)` as its length in seconds (a month as 30 days, a year as 365), `modal.Cron`
    as its string and time zone; None for no schedule."""
    from .sdk.resources import Cron, Period

    if isinstance(schedule, Cron):
        return {"cron": schedule.cron_string, "timezone": schedule.timezone}
    if isinstance(schedule, Period):
        days = schedule.years * 365 + schedule.months * 30 + schedule.weeks * 7 + schedule.days
        seconds = ((days * 24 + schedule.hours) * 60 + schedule.minutes) * 60 + schedule.seconds
        return {"period_s": float(seconds)}
    return None


def _module_files() -> tuple[str, ...]:
    """Every .py file the import loaded; the reloader keeps the local ones."""
    files = (getattr(m, "__file__", None) for m in list(sys.modules.values()))
    return tuple(sorted({f for f in files if isinstance(f, str) and f.endswith(".py")}))


def manifest_json(ref: AppRef) -> str:
    """import_child's job "manifest": import `ref` here and describe it, the modules it loaded included."""
    try:
        manifest = build_manifest(ref)
    except BaseException as e:  # noqa: BLE001 - last resort: still answer the parent
        manifest = AppManifest(ref.stem, ref.path, ref.var, error=LoadError(f"discovery failed: {e!r}", ref.path))
    return dataclasses.replace(manifest, sources=_module_files()).dumps()
