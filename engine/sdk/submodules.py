"""`import modal.app`, `from modal.image import Image`, ...: Modal's public submodules, mapped onto ours.

Without this, Python would look for `modal.<name>` inside this package's folder and either fail or load a
second copy of one of our modules (whose classes would then not match the first copy's). Only active
while `sys.modules["modal"]` is this package.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

# Modal's submodule -> ours
ALIASES = {
    "exception": "exception",
    "app": "app",
    "cls": "cls",
    "functions": "functions",
    "call_graph": "call_graph",
    "_call_graph": "call_graph",  # Modal's older name for it, still in its examples
    "partial_function": "partial",
    "image": "image",
    "secret": "secret",
    "volume": "volume",
    "dict": "dicts",
    "queue": "queues",
    "network_file_system": "volume",
    "cloud_bucket_mount": "volume",
    "retries": "resources",
    "schedule": "resources",
    "proxy": "resources",
    "sandbox": "resources",
    "scheduler_placement": "resources",
    "file_pattern_matcher": "resources",
    "_tunnel": "resources",
}

# Where Modal's client defines each public class (modal/app.py, modal/functions.py, ...): reprs and
# tracebacks then read `modal.app.App`, not ours, and pickle finds the class through the alias above.
MODAL_HOMES = {
    "app": ("App", "LocalEntrypoint"),
    "functions": ("Function", "FunctionCall"),
    "cls": ("Cls", "Obj"),
    "partial_function": ("PartialFunction",),
    "image": ("Image",),
    "secret": ("Secret",),
    "volume": ("Volume",),
    "network_file_system": ("NetworkFileSystem",),
    "cloud_bucket_mount": ("CloudBucketMount",),
    "dict": ("Dict",),
    "queue": ("Queue",),
    "retries": ("Retries",),
    "schedule": ("Cron", "Period"),
    "proxy": ("Proxy",),
    "sandbox": ("Sandbox",),
    "scheduler_placement": ("SchedulerPlacement",),
    "file_pattern_matcher": ("FilePatternMatcher",),
    "_tunnel": ("Tunnel",),
}

_PACKAGE = __name__.rpartition(".")[0]


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.original_spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias spec on our module; give it back its own.
        module.__spec__ = self.original_spec


class _ModalFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("modal."):
            return None
        top = sys.modules.get("modal")
        if getattr(top, "__name__", None) != _PACKAGE:
            return None  # the real modal (or none) is installed: not ours to answer
        ours = ALIASES.get(fullname.removeprefix("modal."))
        if ours is None:
            raise ModuleNotFoundError(
                f"No module named '{fullname}' (mwtui's stand-in for modal does not provide it)", name=fullname
            )
        module = importlib.import_module(f"{_PACKAGE}.{ours}")
        return importlib.util.spec_from_loader(fullname, _AliasLoader(module))


_FINDER = _ModalFinder()


def adopt_modal_names() -> None:
    """Give each class of MODAL_HOMES Modal's module name (exceptions do it in exception.py)."""
    for modal_module, names in MODAL_HOMES.items():
        ours = importlib.import_module(f"{_PACKAGE}.{ALIASES[modal_module]}")
        for name in names:
            getattr(ours, name).__module__ = f"modal.{modal_module}"


def install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
