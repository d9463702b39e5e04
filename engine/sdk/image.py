"""`modal.Image`: a chain of builder calls, recorded. Nothing is built or installed.

Two kinds of call matter locally: `.env({...})` (its variables reach the function's environment) and
`add_local_file` / `add_local_dir` / `add_local_python_source` (files the container would have; see
`mounts`). `with image.imports():` swallows what fails inside it, as Modal does outside its containers;
a replica re-raises it when the image is its own (`worker.pool`).
"""

from __future__ import annotations

import contextlib
import os
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .exception import InvalidError

ImageCall = tuple[str, tuple[Any, ...], dict[str, Any]]

CONSTRUCTORS = (
    "debian_slim", "micromamba", "from_registry", "from_dockerfile", "from_scratch", "from_id", "from_name",
    "from_aws_ecr", "from_gcp_artifact_registry",
)
# Builder -> (name of its local-path argument, name of its remote-path argument)
_LOCAL_FILES = {
    "add_local_file": ("file", "local_path", "remote_path"),
    "add_local_dir": ("dir", "local_path", "remote_path"),
    "copy_local_file": ("file", "local_path", "remote_path"),  # old names, same meaning
    "copy_local_dir": ("dir", "local_path", "remote_path"),
}


class ImportSkippedWarning(UserWarning):
    """`with image.imports():` swallowed an exception, so the rest of that block did not run."""


@dataclass(frozen=True)
class LocalFiles:
    """One `add_local_*` call: what the container would find at `remote` (absolute), from `local`."""

    kind: str  # "file", "dir" or "python" (a module or package by name)
    local: str  # absolute local path; for "python", the module name
    remote: str  # absolute container path; for "python", "/root/<top package>"


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _local_files(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[LocalFiles]:
    if name == "add_local_python_source":
        return [LocalFiles("python", str(m), f"/root/{str(m).split('.')[0]}") for m in args]
    kind, local_name, remote_name = _LOCAL_FILES[name]
    local = os.fspath(_arg(args, kwargs, 0, local_name))
    remote = str(_arg(args, kwargs, 1, remote_name) or "")
    if kind == "file" and (not remote or remote.endswith("/")):
        remote = remote + os.path.basename(local) if remote else f"/root/{os.path.basename(local)}"
    # Relative to where the app runs, as Modal takes it relative to where `modal serve` runs.
    return [LocalFiles(kind, os.path.abspath(local), remote)]


def _check_remote(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in ("add_local_file", "add_local_dir"):
        remote = _arg(args, kwargs, 1, "remote_path")
        if remote is None:
            raise TypeError(f"Image.{name}() missing 1 required argument: 'remote_path'")
        if not PurePosixPath(str(remote)).is_absolute():
            raise InvalidError(f"image.{name}() currently only supports absolute remote_path values")


class Image:
    """Every builder returns a new Image that remembers the call."""

    def __init__(self, calls: tuple[ImageCall, ...] = ()) -> None:
        self.calls = calls
        self.import_errors: list[BaseException] = []

    @property
    def inside_exceptions(self) -> list[BaseException]:  # Modal's name for the same list
        return self.import_errors

    def _then(self, name: str, *args: Any, **kwargs: Any) -> Image:
        _check_remote(name, args, kwargs)
        return Image((*self.calls, (name, args, kwargs)))

    def __getattr__(self, name: str) -> Any:
        # Any public builder (pip_install, apt_install, run_commands, add_local_dir, ...) chains.
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: self._then(name, *a, **k)

    def pipe(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Modal's `pipe`: hand the image to a function that adds steps to it."""
        return func(self, *args, **kwargs)

    def build(self, app: Any = None, **kwargs: Any) -> Image:
        return self

    def hydrate(self, client: Any = None) -> Image:
        return self

    @property
    def object_id(self) -> str:
        """Stable for the same builder calls; what a replica of a function on this image finds in
        MODAL_IMAGE_ID."""
        from ..modal_env import image_id

        return image_id(self.calls)

    @property
    def env_vars(self) -> dict[str, str]:
        """Variables set by `.env(...)` calls, in order, later ones winning."""
        out: dict[str, str] = {}
        for name, args, kwargs in self.calls:
            if name == "env":
                values = args[0] if args else kwargs.get("vars", {})
                out.update({k: str(v) for k, v in dict(values).items()})
        return out

    @property
    def local_files(self) -> list[LocalFiles]:
        """What `add_local_*` calls put into the container, in order."""
        out: list[LocalFiles] = []
        for name, args, kwargs in self.calls:
            if name in _LOCAL_FILES or name == "add_local_python_source":
                out += _local_files(name, args, kwargs)
        return out

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        # As Modal does outside its containers: an exception inside the block is swallowed and kept,
        # and the rest of the block is skipped. We also say so, at the failing line, so discovery
        # can show it (Modal itself only warns for non-ImportErrors).
        try:
            yield
        except Exception as e:  # noqa: BLE001 - swallowing is the documented behaviour
            self.import_errors.append(e)
            # The first frame after this generator's own is the statement in the block that failed.
            here = os.path.abspath(__file__)
            frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) != here]
            filename, lineno = (frames[0].filename, frames[0].lineno or 0) if frames else ("<unknown>", 0)
            text = f"`with image.imports()` swallowed {type(e).__name__}: {e}; the rest of that block was skipped"
            warnings.warn_explicit(text, ImportSkippedWarning, filename, lineno)

    def __repr__(self) -> str:
        return f"<modal.Image {'.'.join(c[0] for c in self.calls) or 'empty'}>"


def _image_constructor(name: str) -> Any:
    return staticmethod(lambda *a, **k: Image(((name, a, k),)))


for _ctor in CONSTRUCTORS:
    setattr(Image, _ctor, _image_constructor(_ctor))
