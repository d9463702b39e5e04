"""Images, secrets, volumes, schedules and the other objects an app file builds at import time.

On Modal all of these are lazy handles: building one makes no network call. Here they are records;
nothing is built, fetched or installed. `Dict` and `Queue` hold their data in the current process, which
is enough for code that uses them as a cache but is not shared between replicas.
"""

from __future__ import annotations

import collections
import contextlib
import os
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

from .exception import InvalidError, NotFoundError

ImageCall = tuple[str, tuple[Any, ...], dict[str, Any]]

_IMAGE_CONSTRUCTORS = (
    "debian_slim", "micromamba", "from_registry", "from_dockerfile", "from_scratch", "from_id", "from_name",
    "from_aws_ecr", "from_gcp_artifact_registry",
)


class ImportSkippedWarning(UserWarning):
    """`with image.imports():` swallowed an exception, so the rest of that block did not run."""


class Image:
    """Every builder returns a new Image that remembers the call; nothing is installed."""

    def __init__(self, calls: tuple[ImageCall, ...] = ()) -> None:
        self.calls = calls
        self.import_errors: list[BaseException] = []

    @property
    def inside_exceptions(self) -> list[BaseException]:  # Modal's name for the same list
        return self.import_errors

    def _then(self, name: str, *args: Any, **kwargs: Any) -> Image:
        return Image((*self.calls, (name, args, kwargs)))

    def __getattr__(self, name: str) -> Any:
        # Any public builder (pip_install, apt_install, run_commands, add_local_dir, ...) chains.
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: self._then(name, *a, **k)

    @property
    def env_vars(self) -> dict[str, str]:
        """Variables set by `.env(...)` calls, in order, later ones winning."""
        out: dict[str, str] = {}
        for name, args, kwargs in self.calls:
            if name == "env":
                values = args[0] if args else kwargs.get("vars", {})
                out.update({k: str(v) for k, v in dict(values).items()})
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


for _ctor in _IMAGE_CONSTRUCTORS:
    setattr(Image, _ctor, _image_constructor(_ctor))


class Secret:
    """A set of environment variables. `kind` says where the values come from; a replica resolves
    `from_name` and `from_dotenv` secrets locally."""

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
        return Secret({}, name=name, kind="name", required_keys=tuple(required_keys or ()))

    @staticmethod
    def from_local_environ(env_keys: list[str]) -> Secret:
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise InvalidError(f"Could not find local environment variables: {', '.join(missing)}")
        return Secret({k: os.environ[k] for k in env_keys}, kind="local_environ")

    @staticmethod
    def from_dotenv(path: str | os.PathLike[str] | None = None, *, filename: str = ".env", **kwargs: Any) -> Secret:
        # Modal searches upward from `path` (or the working directory) when the secret is used.
        start = os.fspath(path) if path is not None else os.getcwd()
        return Secret({}, name=None, kind="dotenv", path=start, filename=filename)

    def __repr__(self) -> str:
        return f"<modal.Secret {self.kind}:{self.name or ','.join(self.values)}>"


class _Named:
    """A handle to a named object on Modal (volume, dict, ...). Locally the name is all there is."""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.name = name
        self.options = options

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> Any:
        return cls(name, **kwargs)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls, **kwargs: Any) -> Iterator[Any]:
        yield cls(None, **kwargs)

    def __repr__(self) -> str:
        return f"<modal.{type(self).__name__} {self.name!r}>"


class Volume(_Named):
    def commit(self) -> None:
        pass

    def reload(self) -> None:
        pass


class NetworkFileSystem(_Named):
    pass


class Proxy(_Named):
    pass


class Dict(_Named):
    """An in-process dict: good enough for a cache, not shared between replicas."""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        self._data: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self._data.get(key, default)

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        if skip_if_exists and key in self._data:
            return False
        self._data[key] = value
        return True

    def update(self, other: Any = (), **kwargs: Any) -> None:
        self._data.update(other, **kwargs)

    def pop(self, key: Any) -> Any:
        return self._data.pop(key)

    def contains(self, key: Any) -> bool:
        return key in self._data

    def len(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()

    def keys(self) -> Iterator[Any]:
        return iter(list(self._data))

    def values(self) -> Iterator[Any]:
        return iter(list(self._data.values()))

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(list(self._data.items()))

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._data[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._data


class Queue(_Named):
    """An in-process FIFO: not shared between replicas, and `get` never waits for other processes."""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        self._items: collections.deque[Any] = collections.deque()

    def put(self, value: Any, **kwargs: Any) -> None:
        self._items.append(value)

    def put_many(self, values: list[Any], **kwargs: Any) -> None:
        self._items.extend(values)

    def get(self, block: bool = True, timeout: float | None = None, **kwargs: Any) -> Any:
        return self._items.popleft() if self._items else None

    def get_many(self, n_values: int, block: bool = True, timeout: float | None = None, **kwargs: Any) -> list[Any]:
        out = []
        while self._items and len(out) < n_values:
            out.append(self._items.popleft())
        return out

    def len(self, **kwargs: Any) -> int:
        return len(self._items)

    def clear(self, **kwargs: Any) -> None:
        self._items.clear()


class CloudBucketMount:
    def __init__(self, bucket_name: str, **kwargs: Any) -> None:
        self.bucket_name = bucket_name
        self.kwargs = kwargs


class Period:
    def __init__(
        self, *, years: int = 0, months: int = 0, weeks: int = 0, days: int = 0, hours: int = 0, minutes: int = 0,
        seconds: float = 0,
    ) -> None:
        self.years, self.months, self.weeks, self.days = years, months, weeks, days
        self.hours, self.minutes, self.seconds = hours, minutes, seconds


class Cron:
    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        self.cron_string, self.timezone = cron_string, timezone


class Retries:
    def __init__(
        self, *, max_retries: int, backoff_coefficient: float = 2.0, initial_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        self.max_retries = max_retries
        self.backoff_coefficient = backoff_coefficient
        self.initial_delay = initial_delay
        self.max_delay = max_delay


class SchedulerPlacement:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FilePatternMatcher:
    def __init__(self, *patterns: str) -> None:
        self.patterns = patterns

    def __invert__(self) -> FilePatternMatcher:
        return self

    def __call__(self, path: Any) -> bool:
        return False


class Tunnel:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tls_socket(self) -> tuple[str, int]:
        return (self.host, self.port)


@contextlib.contextmanager
def forward(port: int, *, unencrypted: bool = False, **kwargs: Any) -> Iterator[Tunnel]:
    """A tunnel to a port of the "container": locally, the port itself."""
    yield Tunnel("127.0.0.1", port)


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    yield


def interact() -> None:
    pass


class Sandbox:
    @staticmethod
    def create(*args: Any, **kwargs: Any) -> Any:
        raise NotFoundError("Sandboxes are not available when running locally with mwtui.")

    @staticmethod
    def from_id(*args: Any, **kwargs: Any) -> Any:
        raise NotFoundError("Sandboxes are not available when running locally with mwtui.")
