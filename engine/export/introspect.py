"""What an export needs that the manifest does not carry: per pool, its Image chain, secrets and volumes.

Like discovery, the app file is imported only in the isolated child of engine/import_child.py (job
"introspect": `info_json` below), and the answer comes back as JSON on a dedicated pipe. The child never
sends a secret's value: only names, keys and where the values live.

Each Image call comes back as {"name", "args", "kwargs"} with arguments made JSON-safe, plus "local":
what the call refers to on this machine, resolved here (absolute paths, the files of
`add_local_python_source` modules), since the parent cannot import the app to find out. `Image.pipe(f)`
is applied (it is `f(image)` on Modal), so the chain the parent sees has no functions left in it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import import_child
from ..loader import AppRef, load_app

TAIL_CHARS = 2000


@dataclass(frozen=True)
class SecretInfo:
    """One `modal.Secret` of a pool, without values. kind: name | dict | local_environ | dotenv."""

    kind: str
    name: str | None = None
    keys: tuple[str, ...] = ()  # the variable names (dict, local_environ); never the values
    required_keys: tuple[str, ...] = ()
    dotenv_file: str | None = None  # the .env file a dotenv secret reads, if found


@dataclass(frozen=True)
class VolumeInfo:
    mount: str
    type: str  # Volume, NetworkFileSystem, CloudBucketMount, ...
    name: str | None = None


@dataclass(frozen=True)
class PoolInfo:
    name: str
    image: tuple[dict[str, Any], ...] | None  # the normalized calls; None: no image given (Modal's default)
    secrets: tuple[SecretInfo, ...] = ()
    volumes: tuple[VolumeInfo, ...] = ()
    single_use_containers: bool = False

    @property
    def image_key(self) -> str:
        """Pools with equal chains share one image."""
        return json.dumps(self.image, sort_keys=True)


@dataclass(frozen=True)
class AppInfo:
    app_name: str
    pools: dict[str, PoolInfo] = field(default_factory=dict)
    error: str | None = None


# ---------------------------------------------------------------- parent side


def inspect_app(ref: AppRef, timeout: float = 30.0) -> AppInfo:
    """Import `ref` in the isolated child and describe its pools; `error` says why not, for a person."""
    done = import_child.run_blocking(ref, "introspect", timeout)
    name = os.path.basename(ref.path)
    if done.timed_out:
        return AppInfo(ref.stem, error=f"importing {name} to read its images did not finish within {timeout:g} s")
    try:
        return _from_json(json.loads(done.payload))
    except (ValueError, KeyError, TypeError):
        tail = done.output[-TAIL_CHARS:]
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        return AppInfo(ref.stem, error=f"importing {name} to read its images failed: {last or 'no output'}")


def _from_json(d: dict[str, Any]) -> AppInfo:
    pools = {}
    for name, p in d["pools"].items():
        pools[name] = PoolInfo(
            name=name,
            image=tuple(p["image"]) if p["image"] is not None else None,
            secrets=tuple(SecretInfo(
                kind=s["kind"], name=s.get("name"), keys=tuple(s.get("keys", ())),
                required_keys=tuple(s.get("required_keys", ())), dotenv_file=s.get("dotenv_file"),
            ) for s in p["secrets"]),
            volumes=tuple(VolumeInfo(v["mount"], v["type"], v.get("name")) for v in p["volumes"]),
            single_use_containers=bool(p.get("single_use_containers")),
        )
    return AppInfo(d["app"], pools, d.get("error"))


# ---------------------------------------------------------------- child side


def _plain(value: Any) -> Any:
    """JSON-safe arguments: paths become strings, lists stay lists, anything else says what it is."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    patterns = getattr(value, "patterns", None)
    if isinstance(patterns, (list, tuple)):  # modal.FilePatternMatcher
        return {"__patterns__": [str(p) for p in patterns]}
    if callable(value):
        return {"__callable__": getattr(value, "__qualname__", repr(value))}
    return {"__repr__": repr(value)}


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _abs(path: Any) -> str | None:
    return os.path.abspath(os.path.expanduser(os.fspath(path))) if path is not None else None


def _module_files(module: str) -> dict[str, Any]:
    """Where `add_local_python_source("pkg")` finds pkg: its folder (a package) or its file."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return {"module": module, "path": None, "package": False}
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return {"module": module, "path": locations[0] if locations else None, "package": True}
    return {"module": module, "path": spec.origin, "package": False}


def _local(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """What a call refers to on this machine (paths resolved from the app's folder, our cwd)."""
    if name in ("add_local_file", "add_local_dir"):
        return {"path": _abs(_arg(args, kwargs, 0, "local_path"))}
    if name == "add_local_python_source":
        return {"modules": [_module_files(str(m)) for m in args]}
    if name == "from_dockerfile":
        context = kwargs.get("context_dir")
        return {"path": _abs(_arg(args, kwargs, 0, "path")), "context_dir": _abs(context)}
    if name == "pip_install_from_requirements":
        return {"path": _abs(_arg(args, kwargs, 0, "requirements_txt"))}
    if name == "pip_install_from_pyproject":
        return {"path": _abs(_arg(args, kwargs, 0, "pyproject_toml"))}
    if name == "uv_pip_install" and kwargs.get("requirements"):
        return {"requirements": [_abs(r) for r in kwargs["requirements"]]}
    if name == "micromamba_install" and kwargs.get("spec_file"):
        return {"spec_file": _abs(kwargs["spec_file"])}
    return None


def _expand(image: Any) -> list[Any]:
    """The raw calls, with `pipe(f)` applied: Modal's `image.pipe(f)` is `f(image)`."""
    from ..sdk.resources import Image

    calls: list[Any] = []
    for call in getattr(image, "calls", ()):
        name, args, kwargs = call
        if name == "pipe" and args and callable(args[0]):
            result = args[0](Image(tuple(calls)), *args[1:], **kwargs)
            calls = list(getattr(result, "calls", calls))
        else:
            calls.append(call)
    return calls


def describe_image(image: Any) -> list[dict[str, Any]] | None:
    if image is None:
        return None
    out = []
    for name, args, kwargs in _expand(image):
        call: dict[str, Any] = {"name": name, "args": _plain(list(args)), "kwargs": _plain(dict(kwargs))}
        local = _local(name, args, kwargs)
        if local is not None:
            call["local"] = local
        out.append(call)
    return out


def _find_dotenv(start: str | None, filename: str) -> str | None:
    """As Modal's from_dotenv: the first `filename` from `start` upwards."""
    folder = os.path.abspath(start or os.getcwd())
    if os.path.isfile(folder):
        return folder
    while True:
        candidate = os.path.join(folder, filename)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def describe_secret(secret: Any) -> dict[str, Any]:
    kind = str(getattr(secret, "kind", "dict"))
    out: dict[str, Any] = {
        "kind": kind,
        "name": getattr(secret, "name", None),
        "required_keys": [str(k) for k in getattr(secret, "required_keys", ()) or ()],
    }
    if kind in ("dict", "local_environ"):
        out["keys"] = sorted(str(k) for k in (getattr(secret, "values", None) or {}))
    if kind == "dotenv":
        out["dotenv_file"] = _find_dotenv(getattr(secret, "path", None), getattr(secret, "filename", ".env"))
    return out


def describe_pool(options: Any) -> dict[str, Any]:
    volumes = [
        {"mount": str(mount), "type": type(v).__name__, "name": getattr(v, "name", None)}
        for mount, v in (getattr(options, "volumes", None) or {}).items()
    ]
    return {
        "image": describe_image(getattr(options, "image", None)),
        "secrets": [describe_secret(s) for s in getattr(options, "secrets", None) or ()],
        "volumes": volumes,
        "single_use_containers": bool(getattr(options, "single_use_containers", False)),
    }


def build_info(ref: AppRef) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # discovery already reported them
        _module, app = load_app(ref)
        pools: dict[str, Any] = {}
        for tag, fn in app._functions.items():
            if fn.web is not None:
                pools[tag] = describe_pool(fn.options)
        for tag, cls in app._classes.items():
            if cls.web_methods():
                pools[tag] = describe_pool(cls.options)
    return {"app": app.name or ref.stem, "pools": pools}


def info_json(ref: AppRef) -> str:
    """import_child's job "introspect": import `ref` here and describe its web pools."""
    try:
        data = build_info(ref)
    except BaseException as e:  # noqa: BLE001 - the parent turns it into a message
        data = {"app": ref.stem, "pools": {}, "error": f"{type(e).__name__}: {e}"}
    return json.dumps(data)
