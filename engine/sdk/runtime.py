"""What this process is to the app: a replica ("the container") serving one pool, or not.

A replica names its pool (`serve_pool`) before it imports the app file. From then on, the environment
of what it runs is put in place as early as it is known:

1. before the import, from the plan discovery made (`MWTUI_POOL_PLAN`, see `environment.plan`);
2. during the import, when the App is created (app-level secrets) and when the pool's own function or
   class is registered (all of its layers): a fallback for replicas started without a plan;
3. after the import, in full, by the worker (`worker.pool`), which also fails the replica clearly when a
   secret is missing.

Other functions that web code calls in-process (`.remote()`, `.spawn()`, `.map()`) get their own
environment and mounts added before their first call (`prepare_call`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from .. import replica_env
from .context import is_local
from .exception import Error, ExecutionError

POOL_PLAN_ENV = "MWTUI_POOL_PLAN"
WEB_URLS_ENV = replica_env.WEB_URLS

_pool: str | None = None
_prepared: set[str] = set()
_lock = threading.Lock()
_urls_raw: str | None = None
_urls: dict[str, str] = {}


def serve_pool(name: str) -> None:
    global _pool
    _pool = name


def pool_name() -> str | None:
    return _pool


def _apply_quietly(options: Any, needed_by: str) -> None:
    from .environment import function_env

    try:
        os.environ.update(function_env(options, needed_by))
    except Error:
        pass  # reported, clearly, by the worker once the import is done


def app_created(app: Any) -> None:
    """App-level secrets reach every function: set them as soon as the App exists."""
    if _pool is None or is_local() or not app.secrets:
        return
    from .environment import resolve

    try:
        os.environ.update(resolve(list(app.secrets), _pool))
    except Error:
        pass


def registered(tag: str, options: Any) -> None:
    """A function or class was registered: if it is the pool this replica serves, set its environment."""
    if _pool is not None and tag == _pool and not is_local():
        _apply_quietly(options, tag)


def prepare_call(tag: str, options: Any) -> None:
    """Before the first in-process call of another function: its environment and mounts, as its own
    container would have them. Raises SecretError if one of its secrets cannot be provided."""
    if is_local() or tag in _prepared:
        return
    from .environment import function_env, mounts_of, provide

    with _lock:
        if tag in _prepared:
            return
        errors = getattr(options.image, "import_errors", None) or []
        if errors:  # its container would have failed at import: say so rather than fail later by name
            raise ExecutionError(
                f"`{tag}` cannot run here: an import inside `with image.imports():` for its image failed "
                f"({type(errors[0]).__name__}: {errors[0]})"
            ) from errors[0]
        env = function_env(options, tag)
        mount_env, problems = provide(mounts_of(options, create=True))
        for p in problems:
            print(f"mwtui: {tag}: {p}", file=sys.stderr)
        os.environ.update(env)
        os.environ.update(mount_env)
        _prepared.add(tag)


def web_url(name: str) -> str | None:
    """The local URL of web endpoint `name` ("hello", "MyAPI.web"), from MWTUI_WEB_URLS: a JSON object
    of endpoint name -> URL that the engine gives each replica."""
    global _urls_raw, _urls
    raw = os.environ.get(WEB_URLS_ENV)
    if raw != _urls_raw:
        try:
            data = json.loads(raw) if raw else {}
            _urls = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except ValueError:
            _urls = {}
        _urls_raw = raw
    return _urls.get(name)
