"""`modal.Dict`: a named key/value map that every replica shares, kept in mwtui's local store.

Keys and values are pickled; keys compare by their pickled bytes, as on Modal. A named Dict lives as
long as MWTUI_HOME (like a deployed Dict); `Dict.ephemeral()` is gone when its block ends.
"""

from __future__ import annotations

import contextlib
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

from .aio import blocking, blocking_gen
from .exception import SerializationError
from .named import NamedObject

PICKLE_PROTOCOL = 4  # fixed: the same key must give the same bytes in every process


def dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception as e:  # noqa: BLE001 - pickle raises several kinds
        raise SerializationError(f"cannot serialize {type(obj).__name__}: {e}") from e


def loads(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - our own store, written by the user's own code


class _Named(NamedObject):
    """A store-backed object: a name, and an ephemeral form that is dropped afterwards."""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        self._store_name = name or f"ephemeral-{uuid.uuid4().hex}"

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls, **kwargs: Any) -> Iterator[Any]:
        from ..store.kv import drop

        obj = cls(None, **kwargs)
        try:
            yield obj
        finally:
            drop(cls.KIND, obj._store_name)

    @property
    def object_id(self) -> str:
        return f"{self.KIND[:2]}-local-{self._store_name}"

    def info(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"<modal.{type(self).__name__} {self.name!r}>"


class Dict(_Named):
    KIND = "dict"

    @property
    def _store(self) -> Any:
        from ..store.kv import DictStore

        return DictStore(self._store_name)

    @blocking
    def get(self, key: Any, default: Any = None) -> Any:
        raw = self._store.get(dumps(key))
        return default if raw is None else loads(raw)

    @blocking
    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        return self._store.put(dumps(key), dumps(value), skip_if_exists=skip_if_exists)

    @blocking
    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        items = dict(other, **kwargs)
        self._store.update([(dumps(k), dumps(v)) for k, v in items.items()])

    @blocking
    def pop(self, key: Any) -> Any:
        raw = self._store.pop(dumps(key))
        if raw is None:
            raise KeyError(f"{key!r} not in dict {self.name or self._store_name}")
        return loads(raw)

    @blocking
    def contains(self, key: Any) -> bool:
        return self._store.contains(dumps(key))

    @blocking
    def len(self) -> int:
        return self._store.len()

    @blocking
    def clear(self) -> None:
        self._store.clear()

    @blocking_gen
    def keys(self) -> Iterator[Any]:
        for k, _ in self._store.items():
            yield loads(k)

    @blocking_gen
    def values(self) -> Iterator[Any]:
        for _, v in self._store.items():
            yield loads(v)

    @blocking_gen
    def items(self) -> Iterator[tuple[Any, Any]]:
        for k, v in self._store.items():
            yield loads(k), loads(v)

    def __getitem__(self, key: Any) -> Any:
        raw = self._store.get(dumps(key))
        if raw is None:
            raise KeyError(key)
        return loads(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._store.put(dumps(key), dumps(value))

    def __delitem__(self, key: Any) -> None:
        if self._store.pop(dumps(key)) is None:
            raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        return self._store.contains(dumps(key))
