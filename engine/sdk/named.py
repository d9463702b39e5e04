"""What every named Modal object here shares (Dict, Queue, Volume and its kin): `from_name` with
Modal's check of the name, and `hydrate`, which has nothing to fetch locally."""

from __future__ import annotations

from typing import Any

from .exception import InvalidError


class NamedObject:
    KIND = ""  # the store's word for it: "dict", "queue", "volume"...

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.name = name
        self.options = options

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise InvalidError(f"Invalid value for `name`: {name!r}")
        return cls(name, **kwargs)

    def hydrate(self, client: Any = None) -> Any:
        return self
