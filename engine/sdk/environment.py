"""What a function's "container" holds besides its code: environment variables and mounted paths.

On Modal a container's environment is its image's ENV, then its secrets (app-level first), then `env=`
(one more secret), all in place before the app file is imported. Locally:

- `function_env(options)` resolves the same layers now (named secrets from mwtui's store, dotenv files).
- `mounts_of(options)` lists what the container would find at absolute paths: volumes, network file
  systems, cloud buckets, `add_local_file` / `add_local_dir`. `provide()` makes each reachable with a
  symlink where the machine allows (see `mwtui.engine.store.volumes`); `check()` only says which
  cannot be, for the manifest's warnings.
- `plan(options)` is all of it as JSON, made by discovery (which imports the file anyway), so that a
  replica can set its environment and mounts *before* it imports the file (`apply_plan`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from typing import Any

from ..modal_env import RESERVED, image_id
from .model import Options
from .secret import Secret


@dataclass(frozen=True)
class Mount:
    path: str  # where the container has it (absolute)
    target: str  # the local file or folder that stands in
    what: str  # for a person: "volume `data`", "add_local_dir('static')"
    env_var: str | None = None  # MWTUI_VOLUME_<NAME>, for volumes
    note: str = ""  # said even when the path can be provided


# --- environment -------------------------------------------------------------------------------------


def env_sources(options: Options) -> list[Secret]:
    """The layers of a function's environment, in Modal's order (later ones win)."""
    image_env = getattr(options.image, "env_vars", None) or {}
    layers = [Secret(dict(image_env))] if image_env else []
    layers += [s for s in options.secrets if isinstance(s, Secret)]
    if options.env:
        layers.append(Secret({k: str(v) for k, v in options.env.items() if v is not None}))
    return layers


def resolve(layers: list[Secret], needed_by: str | None = None) -> dict[str, str]:
    """Raises SecretError (naming the secret, keys and fix) if a named secret cannot be provided."""
    env: dict[str, str] = {}
    for layer in layers:
        env.update(layer.resolve(needed_by))
    # Modal's runtime variables (MODAL_TASK_ID, ...) are reserved: no image ENV, secret or `env=` overrides them.
    return {k: v for k, v in env.items() if k not in RESERVED}


def function_env(options: Options, needed_by: str | None = None) -> dict[str, str]:
    return resolve(env_sources(options), needed_by)


# --- mounts ------------------------------------------------------------------------------------------


def mounts_of(options: Options, *, create: bool = False) -> list[Mount]:
    from ..store.volumes import env_var
    from .volume import CloudBucketMount, NetworkFileSystem, Volume, _Folder

    out: list[Mount] = []
    nfs = dict(options.extra.get("network_file_systems") or {})
    for path, obj in [*options.volumes.items(), *nfs.items()]:
        if not isinstance(obj, _Folder):
            continue
        name = obj.name or "ephemeral"
        if obj._folder is not None:
            target = obj._folder
        else:
            from ..store.volumes import folder_for

            target = str(folder_for(obj.name or "_", obj.KIND, create=create))
        if isinstance(obj, CloudBucketMount):
            out.append(Mount(str(path), target, f"cloud bucket `{obj.bucket_name}`", env_var(name),
                             note=f"an empty local folder stands in for the bucket: {target}"))
        elif isinstance(obj, NetworkFileSystem):
            out.append(Mount(str(path), target, f"network file system `{name}`", env_var(name)))
        elif isinstance(obj, Volume):
            out.append(Mount(str(path), target, f"volume `{name}`", env_var(name)))
    for files in getattr(options.image, "local_files", None) or []:
        if files.kind in ("file", "dir"):
            local = _show(files.local)
            out.append(Mount(files.remote, files.local, f"add_local_{files.kind}('{local}')"))
        elif files.kind == "python" and _container_view():
            # Imports find it where it is; the container view also shows it where Modal puts it.
            found = python_source_path(files.local)
            if found is not None:
                out.append(Mount(found[0], found[1], f"add_local_python_source('{files.local}')"))
    return out


def _container_view() -> bool:
    from ..worker import container

    return container.expected()


def python_source_path(module: str) -> tuple[str, str] | None:
    """(container path, local path) of `add_local_python_source(module)`: Modal copies a package's
    folder to /root/<package>, a lone module to /root/<module>.py. None if it cannot be found."""
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        folders = list(spec.submodule_search_locations)
        return (f"/root/{top}", folders[0]) if folders else None
    if spec.origin and spec.origin.endswith(".py"):
        return f"/root/{top}.py", spec.origin
    return None  # a compiled or built-in module: nothing to show


def python_sources(options: Options) -> list[str]:
    return [f.local for f in getattr(options.image, "local_files", None) or [] if f.kind == "python"]


def _show(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def _cannot(m: Mount, reason: str) -> str:
    tail = f"; its local folder is in ${m.env_var} ({m.target})" if m.env_var else f"; it is at {m.target}"
    app_relative = m.path.startswith("/root/") and os.path.abspath(m.path[len("/root/"):]) == m.target
    if app_relative:
        tail += f", so paths relative to the app's folder ({m.path[len('/root/'):]}) work"
    return (f"{m.what} at {m.path}: cannot be provided at that path ({reason}){tail}; to provide it, "
            f"link it yourself: ln -s {m.target} {m.path}")


def check(options: Options) -> list[str]:
    """Warnings for what the container would have that this machine cannot give at the same path."""
    from ..store.volumes import check_link
    from ..worker import container

    out: list[str] = []
    view = container.expected()
    for m in mounts_of(options):
        if m.note:
            out.append(f"{m.what} at {m.path}: {m.note}")
        if m.what.startswith("add_local") and not os.path.exists(m.target):
            out.append(f"{m.what}: {_show(m.target)} does not exist")
            continue
        if view and not container.in_kernel_tree(m.path):
            continue  # each replica mounts it in its own container view (worker.container): see below
        link = check_link(m.path, m.target)
        if not link.ok:
            out.append(_cannot(m, link.reason))
    if view:
        # What the views cannot give, told here once for all replicas (supervised ones keep quiet).
        wants = container.wants_from_plan({"mounts": [asdict(m) for m in mounts_of(options)]}, os.path.isdir)
        out += [f"container view: {p}" for p in container.plan(wants, container.RealHost(), container.kept())[1]]
    for module in python_sources(options):
        try:
            found = importlib.util.find_spec(module.split(".")[0]) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(f"add_local_python_source('{module}'): no module `{module}` can be imported from "
                       f"{os.getcwd()}, so the replicas cannot import it either")
    return out


def provide(mounts: list[Mount]) -> tuple[dict[str, str], list[str]]:
    """Make each mount path lead to its local stand-in where possible. Returns the MWTUI_VOLUME_*
    variables and, for a person, what could not be provided."""
    from ..store.volumes import link

    env: dict[str, str] = {}
    problems: list[str] = []
    for m in mounts:
        if m.env_var:
            os.makedirs(m.target, exist_ok=True)
            env[m.env_var] = m.target
        elif not os.path.exists(m.target):
            continue  # an add_local_* source that does not exist: discovery says so
        result = link(m.path, m.target)
        if not result.ok:
            problems.append(_cannot(m, result.reason))
    return env, problems


# --- the plan: all of it, before the import -------------------------------------------------------


def plan(options: Options, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a replica needs before importing the app file, as JSON. Secrets from the store and dotenv
    files appear by name and path only; their values are read by the replica."""
    out: dict[str, Any] = {
        "version": 1,
        "env": [s.describe() for s in env_sources(options)],
        "mounts": [asdict(m) for m in mounts_of(options)],
        # Made here, where the image object is: the supervisor sets MODAL_IMAGE_ID from it.
        "image_id": getattr(options.image, "object_id", None) or image_id(()),
    }
    if parameters:
        out["parameters"] = parameters
    return out


def apply_plan(data: dict[str, Any], needed_by: str | None = None) -> list[str]:
    """Set the environment and mounts a plan describes. Raises SecretError like `resolve`; returns the
    mount problems."""
    layers = [Secret.from_description(d) for d in data.get("env") or []]
    env = resolve(layers, needed_by)
    mount_env, problems = provide([Mount(**m) for m in data.get("mounts") or []])
    os.environ.update(env)
    os.environ.update(mount_env)
    return problems


# --- what discovery reports ------------------------------------------------------------------------


def app_report(app: Any) -> tuple[list[str], dict[str, str]]:
    """For the manifest: warnings about what this machine cannot provide (mount paths, secrets not in
    the store), and each pool's plan as JSON."""
    import json

    from .exception import Error

    owners: list[tuple[str, Options, Any]] = [(tag, fn.options, None) for tag, fn in app._functions.items()]
    owners += [(tag, c.options, c) for tag, c in app._classes.items()]
    warnings: dict[str, None] = {}
    secret_users: dict[tuple[str, str], list[str]] = {}  # (secret, problem) -> who needs it
    plans: dict[str, str] = {}
    for tag, options, klass in owners:
        for text in check(options):
            warnings[text] = None
        for secret in options.secrets:
            if isinstance(secret, Secret) and secret.kind == "name":
                try:
                    secret.resolve()
                except Error as e:
                    secret_users.setdefault((secret.name or "", str(e)), []).append(tag)
        is_pool = klass is None or bool(klass.web_methods() or klass.call_methods())  # see discovery.describe
        if is_pool:
            params = klass.parameter_specs() if klass is not None else None
            plans[tag] = json.dumps(plan(options, params), sort_keys=True)
    for (_name, problem), users in secret_users.items():
        who = ", ".join(f"`{u}`" for u in users)
        warnings[f"{problem} (needed by {who}; its replicas will not start until then)"] = None
    return list(warnings), plans
