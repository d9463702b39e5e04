"""Schedules, retries, tunnels and the other small objects an app file builds at import time.

On Modal all of these are lazy handles: building one makes no network call. Here they are records.
Images, secrets, volumes, dicts and queues have modules of their own and are re-exported here, where
Modal's own `modal.image`, `modal.secret`, ... aliases point (see `submodules`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .dicts import Dict
from .exception import NotFoundError
from .image import Image, ImportSkippedWarning
from .queues import Queue
from .secret import Secret
from .volume import CloudBucketMount, NetworkFileSystem, Volume

__all__ = [
    "CloudBucketMount", "Cron", "Dict", "FilePatternMatcher", "Image", "ImportSkippedWarning", "NetworkFileSystem",
    "Period", "Proxy", "Queue", "Retries", "Sandbox", "SchedulerPlacement", "Secret", "Tunnel", "Volume",
    "enable_output", "forward", "interact",
]


class Proxy:
    """A static outbound IP on Modal; locally, traffic simply leaves from this machine."""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.name = name
        self.options = options

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> Proxy:
        return cls(name, **kwargs)


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
