"""Several app files served together: which files a project names, how their names stay apart, and
which of two apps keeps a label both claim. Pure, apart from reading `pyproject.toml`.

With one app file, names are the app's own (`hello`, `MyAPI.health`). With several, every function,
class and endpoint name is scoped by its file's stem (`a:hello`, `b:MyAPI.health`), so that two apps
may both have a `web` function; the replica itself only ever sees its own app's names (`local_name`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import tomllib

from .loader import AppRef
from .manifest import AppManifest, EndpointSpec

SEPARATOR = ":"


class ProjectError(ValueError):
    """A `[tool.mwtui]` table that cannot be used; the text names the file and the key."""


def project_apps(folder: str) -> list[str] | None:
    """The app files `pyproject.toml` in `folder` lists under `[tool.mwtui] apps`, as paths relative to
    it; None when there is no such file or list."""
    path = os.path.join(folder, "pyproject.toml")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProjectError(f"{path}: cannot be read: {exc}") from exc
    apps = data.get("tool", {}).get("mwtui", {}).get("apps")
    if apps is None:
        return None
    if not isinstance(apps, list) or not apps or not all(isinstance(a, str) and a for a in apps):
        raise ProjectError(f'{path}: [tool.mwtui] apps must be a list of app files, e.g. apps = ["api.py", "jobs.py"]')
    return [os.path.join(folder, a) for a in apps]  # an absolute path stays as it is


def scopes(refs: Sequence[AppRef]) -> list[str]:
    """Each app's scope: "" for a lone app, else its file's stem (a repeated stem gets `-2`, `-3`)."""
    if len(refs) < 2:
        return [""] * len(refs)
    out: list[str] = []
    for ref in refs:
        stem, n = ref.stem, 2
        name = stem
        while name in out:
            name, n = f"{stem}-{n}", n + 1
        out.append(name)
    return out


def scoped(name: str, scope: str) -> str:
    return f"{scope}{SEPARATOR}{name}" if scope else name


def local_name(name: str) -> str:
    """The name within its own app: `b:MyAPI.health` -> `MyAPI.health`."""
    return name.rpartition(SEPARATOR)[2]


def scope_of(name: str) -> str:
    return name.rpartition(SEPARATOR)[0]


def scope_manifest(m: AppManifest, scope: str) -> AppManifest:
    """The manifest with every endpoint and pool name scoped (unchanged for scope "")."""
    if not scope:
        return m
    endpoints = tuple(dataclasses.replace(e, name=scoped(e.name, scope), pool=scoped(e.pool, scope)) for e in m.endpoints)
    plans = tuple((scoped(pool, scope), plan) for pool, plan in m.pool_plans)
    return dataclasses.replace(m, endpoints=endpoints, pool_plans=plans)


def _claims(e: EndpointSpec) -> list[tuple[str, str]]:
    """What an endpoint claims on the gateway: its label and its custom domains (calls claim nothing
    a person sees, and their internal labels carry the app's name)."""
    if e.is_call:
        return []
    return [("label", e.label.lower()), *(("custom domain", d.lower().rstrip(".")) for d in e.custom_domains)]


def clashes(manifests: Sequence[AppManifest]) -> list[tuple[set[str], list[str]]]:
    """For each app in order: the endpoints it may not serve because an app listed before it claims
    the same label or custom domain, and one message per clash naming the label and both files."""
    owner: dict[tuple[str, str], tuple[str, str]] = {}  # claim -> (endpoint, file)
    out: list[tuple[set[str], list[str]]] = []
    for m in manifests:
        dropped: set[str] = set()
        messages: list[str] = []
        for e in m.endpoints:
            for what, value in _claims(e):
                first = owner.setdefault((what, value), (e.name, m.file))
                if first[1] == m.file:
                    continue
                dropped.add(e.name)
                messages.append(
                    f"The {what} '{value}' is claimed by both `{local_name(first[0])}` in {os.path.basename(first[1])} "
                    f"and `{local_name(e.name)}` in {os.path.basename(m.file)}; `{local_name(e.name)}` is not served. "
                    f"Give one of them a different {'`label=`' if what == 'label' else 'custom domain'}."
                )
        out.append((dropped, messages))
    return out


def without(m: AppManifest, names: set[str]) -> AppManifest:
    """The manifest less the endpoints named (a clash); a pool left with none is left out."""
    if not names:
        return m
    return dataclasses.replace(m, endpoints=tuple(e for e in m.endpoints if e.name not in names))


def owned_by(apps: Sequence[ServedApp], app: ServedApp) -> Callable[[str], bool]:
    """Which changed paths are `app`'s to reload for, when several apps share folders: its own file and
    the modules it imports; not another app's file, nor a module only other apps import. A file no app
    imports yet (a new helper, a data file) reloads every app that watches it."""
    own = os.path.abspath(app.ref.path)

    def mine(path: str) -> bool:
        path = os.path.abspath(path)
        if path == own or path in _sources(app):
            return True
        others = [a for a in apps if a is not app]
        if any(path == os.path.abspath(a.ref.path) for a in others):
            return False
        return not any(path in _sources(a) for a in others)

    return mine


def _sources(app: ServedApp) -> frozenset[str]:
    return frozenset(getattr(app.reloader, "sources", ()) or ())


@dataclass
class ServedApp:
    """One app file of those served: its scope, the manifest it serves now (scoped, clashes left out),
    what its last clash check said, and its reloader (set by the engine)."""

    ref: AppRef
    scope: str
    manifest: AppManifest | None = None
    clash_messages: list[str] = field(default_factory=list)
    reloader: Any = None

    @property
    def name(self) -> str:
        return self.manifest.app_name if self.manifest else self.ref.stem

    def owns_pool(self, pool: str) -> bool:
        return scope_of(pool) == self.scope
