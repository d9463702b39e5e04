"""Import a user's app file with our `modal` in place. Only ever called inside a subprocess.

Both discovery and every replica go through here, so the file is imported the same way in both.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType

MODULE_FLAG = "-m "


@dataclass(frozen=True)
class AppRef:
    """What to import: `path/to/app.py[::variable]` (Modal's syntax), or the module form of `modal serve
    -m package.module[::variable]`, which imports a module by name with `root` first on sys.path (so
    that relative imports inside the package work). For a module, `path` is its file (found without
    running anything), which discovery, the reloader and error messages use like any app file's.

    `str()` gives one argument that `parse` reads back: `-m package.module[::variable]@/abs/root` for
    the module form."""

    path: str  # absolute
    var: str | None = None
    module: str | None = None  # dotted name, for the module form
    root: str | None = None  # the sys.path folder the module is found in (module form)

    @classmethod
    def parse(cls, text: str) -> AppRef:
        if text.startswith(MODULE_FLAG):
            # The root is absolute, so it starts at "@/": a folder named `a@b` stays part of the module.
            target, at, root = text[len(MODULE_FLAG):].strip().partition("@" + os.sep)
            module, _, var = target.partition("::")
            return cls.for_module(module, var or None, os.sep + root if at else None)
        path, _, var = text.partition("::")
        return cls(os.path.abspath(path), var or None)

    @classmethod
    def for_module(cls, module: str, var: str | None = None, root: str | None = None) -> AppRef:
        """`-m package.module`: find its file under `root` (default: the working directory), then on
        sys.path. Any name the import system finds counts, as with `modal serve -m` (which calls
        `importlib.import_module` with the working directory on sys.path): folders named `my-project`
        or `2024` included. Raises ModuleNotFoundError with a one-line message naming the module."""
        if not module or any(not part.strip() for part in module.split(".")):
            raise ModuleNotFoundError(
                f"-m {module!r} is not a module path: give dotted names from the current folder, e.g. -m package.app",
                name=module,
            )
        search = [os.path.abspath(root or os.getcwd())]
        if root is None:
            search += [p for p in sys.path if p and os.path.isdir(p)]
        namespace: str | None = None
        for folder in search:
            spec = _module_spec(module, folder)
            if spec is None:
                continue
            if spec.origin and spec.has_location:
                return cls(os.path.abspath(spec.origin), var, module, folder)
            # A folder without __init__.py (a namespace package): importable, but no code of its own;
            # a real module of that name further along sys.path would still win, as in Python.
            namespace = namespace or next(iter(spec.submodule_search_locations or []), folder)
        if namespace is not None:
            raise ModuleNotFoundError(
                f"{module!r} is a folder ({namespace}), not a module: name the Python file in it, "
                f"e.g. -m {module}.app",
                name=module,
            )
        raise ModuleNotFoundError(f"no module named {module!r} under {search[0]} or on sys.path", name=module)

    def __str__(self) -> str:
        if self.module is not None:
            target = f"{self.module}::{self.var}" if self.var else self.module
            return f"{MODULE_FLAG}{target}@{self.root}"
        return f"{self.path}::{self.var}" if self.var else self.path

    @property
    def stem(self) -> str:
        if self.module is not None:
            return self.module.rpartition(".")[2]
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def cwd(self) -> str:
        """Where the app's processes should run: the file's folder, or the module form's root (where
        one runs `modal serve -m`)."""
        return self.root if self.root is not None else os.path.dirname(self.path)


def _module_spec(module: str, folder: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of `module` found from `folder` by the import system's own path finder, without
    importing (and so without running) any package on the way. No check that the parts are
    identifiers: `importlib.import_module` takes any folder name, and so does Modal's `-m`."""
    locations: list[str] | None = [folder]
    spec = None
    for part in module.split("."):
        if locations is None:
            return None  # a module, not a package, has no submodules
        spec = importlib.machinery.PathFinder.find_spec(part, locations)
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or []) or None
    return spec


class AppNotFound(Exception):
    """The file imported, but holds no `modal.App` (or not the one named)."""


def install_sdk() -> ModuleType:
    """Make `import modal` (and `modal.exception`) give our SDK, even if the real one is installed."""
    from . import sdk
    from .sdk import exception

    sys.modules["modal"] = sdk
    sys.modules["modal.exception"] = exception
    return sdk


def import_file(ref: AppRef) -> ModuleType:
    """Import the file as a module named after its stem, with its folder first on sys.path (as `modal
    serve` does), so that its sibling modules import too. The module form imports the module by name,
    with its root first on sys.path."""
    install_sdk()
    if ref.module is not None:
        root = ref.root or os.getcwd()
        if root not in sys.path:
            sys.path.insert(0, root)
        return importlib.import_module(ref.module)
    folder = os.path.dirname(ref.path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(ref.stem, ref.path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {ref.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[ref.stem] = module
    spec.loader.exec_module(module)
    return module


def find_app(module: ModuleType, ref: AppRef):  # -> sdk.App
    from .sdk import App

    if ref.var:
        app = getattr(module, ref.var, None)
        if not isinstance(app, App):
            raise AppNotFound(f"{ref.path} has no modal.App named `{ref.var}`")
        return app
    app = getattr(module, "app", None)
    if isinstance(app, App):
        return app
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    if not apps:
        raise AppNotFound(f"{ref.path} defines no modal.App (expected a variable like `app = modal.App()`)")
    raise AppNotFound(
        f"{ref.path} defines several modal.App objects; name one as {ref.path}::<variable>"
    )


def load_app(ref: AppRef):  # -> tuple[ModuleType, sdk.App]
    module = import_file(ref)
    return module, find_app(module, ref)
