"""Import a user's app file with our `modal` in place. Only ever called inside a subprocess.

Both discovery and every replica go through here, so the file is imported the same way in both.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class AppRef:
    """`path/to/app.py` or `path/to/app.py::variable`, Modal's syntax."""

    path: str  # absolute
    var: str | None = None

    @classmethod
    def parse(cls, text: str) -> AppRef:
        path, _, var = text.partition("::")
        return cls(os.path.abspath(path), var or None)

    def __str__(self) -> str:
        return f"{self.path}::{self.var}" if self.var else self.path

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


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
    serve` does), so that its sibling modules import too."""
    install_sdk()
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
