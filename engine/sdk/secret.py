"""`modal.Secret`: a set of environment variables, and where its values come from.

`from_dict` and `from_local_environ` carry their values; `from_name` is looked up in mwtui's local store
(`mwtui secret set NAME KEY=VALUE`), and `from_dotenv` reads its file, both when a replica starts (see
`environment`), as Modal resolves them when the app is deployed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .exception import InvalidError, NotFoundError


class SecretError(NotFoundError):
    """A secret cannot be provided locally; the message says what to run to fix it. Tracebacks name it
    as Modal names a missing secret's error."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _secret_error, self.args


def _secret_error(*args: Any) -> SecretError:
    return SecretError(*args)


SecretError.__module__, SecretError.__name__, SecretError.__qualname__ = "modal.exception", "NotFoundError", "NotFoundError"


def _set_command(name: str, keys: list[str] | tuple[str, ...]) -> str:
    pairs = " ".join(f"{k}=..." for k in keys) or "KEY=VALUE ..."
    return f"mwtui secret set {name} {pairs}"


def _walk_up(start: str) -> list[Path]:
    path = Path(start).resolve()
    if path.is_file() or not path.exists():
        path = path.parent
    return [path, *path.parents]


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str | None]:
    try:
        from dotenv import dotenv_values
    except ImportError:  # python-dotenv comes with uvicorn[standard]; a bare parser otherwise
        out: dict[str, str | None] = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.strip().removeprefix("export ").strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip().strip("'\"")
        return out
    return dict(dotenv_values(path))


class Secret:
    """`kind` says where the values come from: "dict", "local_environ", "name" or "dotenv"."""

    def __init__(
        self,
        values: dict[str, str | None] | None = None,
        name: str | None = None,
        *,
        kind: str = "dict",
        required_keys: tuple[str, ...] = (),
        path: str | None = None,
        filename: str = ".env",
    ) -> None:
        self.values = dict(values or {})
        self.name = name
        self.kind = kind
        self.required_keys = required_keys
        self.path = path
        self.filename = filename

    @staticmethod
    def from_dict(env_dict: dict[str, str | None] | None = None) -> Secret:
        env_dict = env_dict or {}
        if not isinstance(env_dict, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in env_dict.items()
        ):
            raise InvalidError("secret must be a dict[str, str] or dict[str, None]")
        return Secret(env_dict)

    @staticmethod
    def from_name(
        name: str, *, environment_name: str | None = None, required_keys: list[str] | None = None, **kwargs: Any
    ) -> Secret:
        if not isinstance(name, str) or not name:
            raise InvalidError(f"Invalid value for `name`: {name!r}")
        return Secret({}, name=name, kind="name", required_keys=tuple(required_keys or ()))

    @staticmethod
    def from_local_environ(env_keys: list[str]) -> Secret:
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise InvalidError(f"Could not find local environment variables: {', '.join(missing)}")
        return Secret({k: os.environ[k] for k in env_keys}, kind="local_environ")

    @staticmethod
    def from_dotenv(path: str | os.PathLike[str] | None = None, *, filename: str = ".env", **kwargs: Any) -> Secret:
        # Modal looks upward from `path` (a file or folder; default: the working directory) for `filename`.
        start = os.path.abspath(os.fspath(path)) if path is not None else os.getcwd()
        return Secret({}, name=None, kind="dotenv", path=start, filename=filename)

    def hydrate(self, client: Any = None) -> Secret:
        return self

    def dotenv_file(self) -> Path | None:
        for folder in _walk_up(self.path or os.getcwd()):
            candidate = folder / self.filename
            if candidate.is_file():
                return candidate
        return None

    def resolve(self, needed_by: str | None = None) -> dict[str, str]:
        """The variables this secret sets, now. Raises SecretError for a missing named secret or
        required key, naming the secret, the keys and the command that fixes it."""
        if self.kind == "dotenv":
            found = self.dotenv_file()
            values: dict[str, str | None] = read_dotenv(found) if found else {}
        elif self.kind == "name":
            values = dict(self._from_store(needed_by))
        else:
            values = self.values
        return {k: v for k, v in values.items() if v is not None}

    def _from_store(self, needed_by: str | None) -> dict[str, str]:
        from ..store.secrets import SecretStore, SecretStoreError

        assert self.name is not None
        store = SecretStore()
        who = f" (needed by `{needed_by}`)" if needed_by else ""
        try:
            values = store.get(self.name)
        except SecretStoreError as e:
            raise SecretError(f"Secret '{self.name}'{who} cannot be read: {e}") from None
        if values is None:
            raise SecretError(
                f"Secret '{self.name}'{who} is not in mwtui's local secret store ({store.path}). "
                f"Create it with: {_set_command(self.name, self.required_keys)}"
            )
        nul = sorted(k for k, v in values.items() if "\0" in v)  # a hand-edited file: `secret set` refuses them
        if nul:
            raise SecretError(
                f"Secret '{self.name}'{who}: the value of {', '.join(map(repr, nul))} holds a NUL byte, which an "
                f"environment variable cannot hold; set it again with: {_set_command(self.name, nul)}"
            )
        missing = [k for k in self.required_keys if k not in values]
        if missing:
            has = ", ".join(sorted(values)) or "no keys"
            raise SecretError(
                f"Secret '{self.name}'{who} is missing required key(s) {', '.join(missing)} (it has {has}). "
                f"Add them with: {_set_command(self.name, missing)}"
            )
        return values

    def describe(self) -> dict[str, Any]:
        """A JSON form that a replica can resolve before importing the app (see `environment`)."""
        if self.kind == "name":
            return {"kind": "name", "name": self.name, "required_keys": list(self.required_keys)}
        if self.kind == "dotenv":
            return {"kind": "dotenv", "path": self.path, "filename": self.filename}
        return {"kind": self.kind, "values": {k: v for k, v in self.values.items() if v is not None}}

    @staticmethod
    def from_description(d: dict[str, Any]) -> Secret:
        kind = d.get("kind", "dict")
        if kind == "name":
            return Secret({}, name=d["name"], kind="name", required_keys=tuple(d.get("required_keys") or ()))
        if kind == "dotenv":
            return Secret({}, kind="dotenv", path=d.get("path"), filename=d.get("filename") or ".env")
        return Secret(dict(d.get("values") or {}), kind=kind)

    def __repr__(self) -> str:
        return f"<modal.Secret {self.kind}:{self.name or ','.join(self.values)}>"
