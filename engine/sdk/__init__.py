"""The `modal` API as a user's app file sees it.

Installed as `sys.modules["modal"]` (see `mwtui.engine.loader`) in every process that imports user
code, whether or not the real `modal` package is installed. It records and validates; it never talks
to a network.
"""

from __future__ import annotations

import os
from typing import Any

from . import exception
from .app import App, Cls, Function
from .exception import Error, InvalidError
from .partial import (
    asgi_app,
    concurrent,
    enter,
    exit,
    fastapi_endpoint,
    method,
    web_endpoint,
    web_server,
    wsgi_app,
)
from .resources import (
    CloudBucketMount,
    Cron,
    Image,
    NetworkFileSystem,
    Period,
    Retries,
    Secret,
    Volume,
)


def is_local() -> bool:
    """False inside a replica (the "container"), True anywhere else, as on Modal."""
    return os.environ.get("MODAL_IS_REMOTE") != "1"


def parameter(*, default: Any = ..., init: bool = True) -> Any:
    return default if default is not ... else None


__all__ = [
    "App", "Cls", "CloudBucketMount", "Cron", "Error", "Function", "Image", "InvalidError",
    "NetworkFileSystem", "Period", "Retries", "Secret", "Volume", "asgi_app", "concurrent", "enter",
    "exception", "exit", "fastapi_endpoint", "is_local", "method", "parameter", "web_endpoint",
    "web_server", "wsgi_app",
]
