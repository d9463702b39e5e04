"""Named secrets, the local stand-in for `modal.Secret.from_name(NAME)`.

`$MWTUI_HOME/secrets.json` (mode 0600, in a 0700 folder) maps each name to its key/value pairs. Writes
replace the whole file atomically under an exclusive lock, so readers never see half a file and two
`mwtui secret set` at once lose nothing. Every read goes to the file: a replica started after a
`mwtui secret set` sees the new values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .home import NAME_RE, locked, mwtui_home, write_private

FILE_NAME = "secrets.json"


class SecretStoreError(Exception):
    """The store cannot be read or written, or a name or key is not allowed; the message says which."""


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):  # not match(): `$` would let a trailing newline through
        raise SecretStoreError(
            f"invalid secret name {name!r}: use 1 to 64 letters, digits, '.', '-' or '_' (Modal's rule)"
        )


def check_key(key: str) -> None:
    # Printed by `mwtui secret list`: no control characters either.
    if not key or "=" in key or not key.isprintable():
        raise SecretStoreError(f"invalid key {key!r}: an environment variable name, without '=' or control characters")


def check_value(key: str, value: str) -> None:
    if "\0" in value:  # the replica's environment would refuse it, and the app's import fail
        raise SecretStoreError(f"the value of {key} holds a NUL byte, which an environment variable cannot hold")


def default_path() -> Path:
    return mwtui_home() / FILE_NAME


class SecretStore:
    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise SecretStoreError(f"cannot read {self.path}: {e.strerror or e}") from None
        try:
            data: Any = json.loads(raw) if raw.strip() else {"secrets": {}}
            secrets = data["secrets"]
            if not isinstance(secrets, dict) or not all(
                isinstance(v, dict) and all(isinstance(x, str) for x in v.values()) for v in secrets.values()
            ):
                raise TypeError("secrets is not a map of names to string maps")
            return secrets
        except (ValueError, KeyError, TypeError) as e:
            raise SecretStoreError(f"{self.path} is not a valid mwtui secrets file ({e}); fix or delete it") from None

    def _write(self, secrets: dict[str, dict[str, str]]) -> None:
        data = json.dumps({"version": 1, "secrets": secrets}, indent=2, sort_keys=True).encode() + b"\n"
        try:
            write_private(self.path, data)
        except OSError as e:
            raise SecretStoreError(f"cannot write {self.path}: {e.strerror or e}") from None

    def get(self, name: str) -> dict[str, str] | None:
        return self._read().get(name)

    def list(self) -> dict[str, list[str]]:
        """Each name with its keys, sorted; never the values."""
        return {name: sorted(values) for name, values in sorted(self._read().items())}

    def set(self, name: str, values: dict[str, str], *, replace: bool = False) -> dict[str, str]:
        """Add (or, with `replace`, set exactly) these keys of secret `name`; returns what it now holds."""
        check_name(name)
        for key, value in values.items():
            check_key(key)
            check_value(key, value)
        try:
            with locked(self.path):
                secrets = self._read()
                merged = dict(values) if replace else {**secrets.get(name, {}), **values}
                secrets[name] = merged
                self._write(secrets)
        except OSError as e:
            raise SecretStoreError(f"cannot write in {self.path.parent}: {e.strerror or e}") from None
        return merged

    def delete(self, name: str) -> bool:
        try:
            with locked(self.path):
                secrets = self._read()
                if name not in secrets:
                    return False
                del secrets[name]
                self._write(secrets)
        except OSError as e:
            raise SecretStoreError(f"cannot write in {self.path.parent}: {e.strerror or e}") from None
        return True
