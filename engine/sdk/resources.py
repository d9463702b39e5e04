"""Images, secrets and volumes: accepted and recorded; nothing is built or fetched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Image:
    """Every builder returns a new Image that remembers the call; nothing is installed."""

    def __init__(self, calls: tuple[tuple[str, tuple[Any, ...], dict[str, Any]], ...] = ()) -> None:
        self.calls = calls
        self.import_errors: list[BaseException] = []

    def _then(self, name: str, *args: Any, **kwargs: Any) -> Image:
        return Image((*self.calls, (name, args, kwargs)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: self._then(name, *a, **k)

    @property
    def env_vars(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, args, kwargs in self.calls:
            if name == "env":
                out.update({k: str(v) for k, v in (args[0] if args else kwargs.get("vars", {})).items()})
        return out

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        # As Modal does on a laptop: a failing import inside the block is swallowed and remembered.
        try:
            yield
        except Exception as e:  # noqa: BLE001 - swallowing is the documented behaviour
            self.import_errors.append(e)


def _image_constructor(name: str) -> Any:
    return staticmethod(lambda *a, **k: Image(((name, a, k),)))


for _ctor in ("debian_slim", "micromamba", "from_registry", "from_dockerfile", "from_scratch", "from_id",
              "from_name", "from_aws_ecr", "from_gcp_artifact_registry"):
    setattr(Image, _ctor, _image_constructor(_ctor))


class Secret:
    def __init__(self, values: dict[str, str | None] | None = None, name: str | None = None) -> None:
        self.values = dict(values or {})
        self.name = name

    @staticmethod
    def from_dict(env_dict: dict[str, str | None] | None = None) -> Secret:
        return Secret(env_dict or {})

    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None, required_keys: list[str] | None = None,
                  **kwargs: Any) -> Secret:
        return Secret({}, name=name)

    @staticmethod
    def from_local_environ(env_keys: list[str]) -> Secret:
        import os

        return Secret({k: os.environ[k] for k in env_keys if k in os.environ})

    @staticmethod
    def from_dotenv(path: str | None = None, *, filename: str = ".env") -> Secret:
        return Secret({}, name=f"dotenv:{path or ''}{filename}")


class _Named:
    def __init__(self, name: str | None = None) -> None:
        self.name = name

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> Any:
        return cls(name)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls, **kwargs: Any) -> Iterator[Any]:
        yield cls(None)

    def commit(self) -> None:
        pass

    def reload(self) -> None:
        pass


class Volume(_Named):
    pass


class NetworkFileSystem(_Named):
    pass


class CloudBucketMount:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class Period:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class Cron:
    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        self.cron_string, self.timezone = cron_string, timezone


class Retries:
    def __init__(self, *, max_retries: int, backoff_coefficient: float = 2.0, initial_delay: float = 1.0,
                 max_delay: float = 60.0) -> None:
        self.max_retries = max_retries
