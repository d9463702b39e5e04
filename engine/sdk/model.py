"""The records the `modal` API leaves behind when a user's file is imported.

Discovery turns them into a manifest; a replica reads them to build and serve the endpoints. They are
the only contract between the two: nothing here runs user code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

WebKind = Literal["fastapi", "asgi", "wsgi", "web_server"]


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


@dataclass
class Options:
    """The keyword arguments of `@app.function` / `@app.cls` that matter locally, after validation."""

    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: int = 60
    timeout: int = 300
    startup_timeout: float | None = None
    max_inputs: int = 1
    target_inputs: int = 1
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[Any] = field(default_factory=list)
    volumes: dict[str, Any] = field(default_factory=dict)
    image: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # every other keyword, kept as given


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
    is_method: bool = False  # @modal.method
    source: Source | None = None
