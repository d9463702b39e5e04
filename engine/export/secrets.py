"""Secrets in a cluster: referenced by name from the Service (`envFrom.secretRef`), made with kubectl.

No value is ever written into a manifest or printed: each `kubectl create secret` command reads its
values where they live. Per kind of `modal.Secret`:
- `from_name(NAME)`: mwtui's local store, through `mwtui secret export NAME` (KEY=VALUE lines) fed to
  `--from-env-file` by process substitution, so the values never reach the screen or shell history.
- `from_local_environ([...])`: the exporting shell's own variables (`--from-literal=KEY="$KEY"`); the
  app reads them at import time in the container too, so they must be there.
- `from_dotenv()`: the .env file itself (`--from-env-file=PATH`).
- `from_dict` and `env=`: nothing to do. Their values are in the app file, which the container imports,
  and the replica applies them as it does locally (as on Modal, where they travel with the app).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field

from .introspect import SecretInfo

_INVALID = re.compile(r"[^a-z0-9.-]+")


@dataclass
class ClusterSecret:
    """One Kubernetes Secret the Services refer to."""

    name: str  # the Kubernetes name
    source: str  # what it is made from, for a person: "Modal secret `openai`", ".env file /x/.env"
    command: list[str]  # the kubectl command, as words (shell syntax where it says so)
    keys: tuple[str, ...] = ()  # the keys it must hold (a Modal secret's required_keys)
    pools: list[str] = field(default_factory=list)


def k8s_name(text: str) -> str:
    """A DNS-1123 subdomain from a Modal secret name (which may have capitals and `_`)."""
    name = _INVALID.sub("-", text.lower()).strip("-.") or "secret"
    if len(name) > 253:
        name = f"{name[:246]}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    return name


def _kubectl(name: str, namespace: str | None, *sources: str) -> list[str]:
    words = ["kubectl", "create", "secret", "generic", name]
    if namespace:
        words += ["-n", namespace]
    return [*words, *sources]


class SecretPlan:
    """Collects the secrets of every pool; one ClusterSecret per distinct source."""

    def __init__(self, app_name: str, namespace: str | None) -> None:
        self.app_name = app_name
        self.namespace = namespace
        self.secrets: dict[str, ClusterSecret] = {}

    def _add(self, secret: ClusterSecret, pool: str) -> str:
        existing = self.secrets.setdefault(secret.name, secret)
        if pool not in existing.pools:
            existing.pools.append(pool)
        return existing.name

    def refs(self, pool: str, infos: tuple[SecretInfo, ...]) -> list[str]:
        """The Kubernetes Secret names pool `pool` reads its environment from, in Modal's order."""
        names: list[str] = []
        environ_keys: list[str] = []
        for info in infos:
            if info.kind == "name" and info.name:
                name = k8s_name(info.name)
                source = f"Modal secret `{info.name}`"
                cmd = _kubectl(name, self.namespace, f"--from-env-file=<(mwtui secret export {shlex.quote(info.name)})")
                names.append(self._add(ClusterSecret(name, source, cmd, info.required_keys), pool))
            elif info.kind == "local_environ":
                environ_keys += [k for k in info.keys if k not in environ_keys]
            elif info.kind == "dotenv":
                if info.dotenv_file is None:
                    continue  # Modal would fail the same way; discovery already said so
                digest = hashlib.sha256(info.dotenv_file.encode()).hexdigest()[:6]
                name = k8s_name(f"{self.app_name}-dotenv-{digest}")
                cmd = _kubectl(name, self.namespace, f"--from-env-file={shlex.quote(info.dotenv_file)}")
                names.append(self._add(ClusterSecret(name, f".env file {info.dotenv_file}", cmd), pool))
        if environ_keys:
            name = k8s_name(f"{self.app_name}-{pool}-local-environ")
            literals = [f'--from-literal={k}="${k}"' for k in environ_keys]
            source = f"Secret.from_local_environ({', '.join(environ_keys)}), read from this shell"
            names.append(self._add(ClusterSecret(name, source, _kubectl(name, self.namespace, *literals)), pool))
        return list(dict.fromkeys(names))

    def commands(self) -> list[str]:
        """Shell lines (bash: `<(...)` is process substitution); values never inline."""
        return [" ".join(s.command) for s in self.secrets.values()]
