"""The records the `modal` API leaves behind when a user's file is imported.

Discovery turns them into a manifest; a replica reads them to build and serve the endpoints. They are
the only contract between the two: nothing here runs user code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

# "call": not a web decorator, the way other pools call a function or a class's @modal.method (see
# worker/call_app.py); the worker gives such a pool an endpoint of this kind.
WebKind = Literal["fastapi", "asgi", "wsgi", "web_server", "call"]


@dataclass(frozen=True)
class WebConfig:
    """What one web decorator asked for."""

    kind: WebKind
    decorator: str  # the name the user wrote: "fastapi_endpoint", "web_endpoint", "asgi_app", ...
    method: str = "GET"
    label: str | None = None
    docs: bool = False
    requires_proxy_auth: bool = False
    custom_domains: tuple[str, ...] = ()
    port: int | None = None
    startup_timeout: float = 5.0

    @property
    def deprecated_alias(self) -> bool:
        return self.decorator == "web_endpoint"


@dataclass
class Options:
    """The keyword arguments of `@app.function` / `@app.cls` that matter locally, after validation.

    Defaults are Modal's: scale to zero, no upper bound, one input at a time per replica."""

    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: int = 60
    timeout: int = 300
    startup_timeout: float | None = None  # None: the same as `timeout`, as on Modal
    max_inputs: int = 1
    target_inputs: int = 1
    single_use_containers: bool = False  # a replica retires after one input
    # `@modal.batched` (the function's, or a class's one batched method): inputs gathered into one call
    batch_max_size: int | None = None
    batch_wait_ms: int = 0
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[Any] = field(default_factory=list)
    volumes: dict[str, Any] = field(default_factory=dict)
    image: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # every keyword as given, old names included


@dataclass
class Source:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class MethodInfo:
    """A decorated method of an `@app.cls` class."""

    name: str
    raw_f: Callable[..., Any]
    web: WebConfig | None = None
    enter: bool = False
    snap: bool = False
    exit: bool = False
    is_method: bool = False  # @modal.method (or @modal.batched)
    source: Source | None = None
    is_generator: bool = False
    batch_max_size: int | None = None  # @modal.batched
    batch_wait_ms: int = 0


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

PARAMETER_TYPES: tuple[type, ...] = (int, str, bytes, bool)


@dataclass(frozen=True)
class ParameterInfo:
    """One `name: type = modal.parameter(...)` of an `@app.cls` class."""

    name: str
    type: type
    default: Any = MISSING

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def parse(self, text: str) -> Any:
        """A value from text (a query string), by the declared type. Raises ValueError if it does not fit."""
        if self.type is str:
            return text
        if self.type is bytes:
            return text.encode()
        if self.type is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.name}: expected a boolean, got {text!r}")
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{self.name}: expected an integer, got {text!r}") from None
