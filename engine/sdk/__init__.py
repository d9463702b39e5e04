"""The `modal` API as a user's app file sees it.

Installed as `sys.modules["modal"]` (see `mwtui.engine.loader`) in every process that imports user
code, whether or not the real `modal` package is installed. It records and validates; it never talks
to a network.
"""

from __future__ import annotations

from . import exception, submodules
from .app import App, LocalEntrypoint
from .cls import Cls, parameter
from .context import current_function_call_id, current_input_id, is_local
from .exception import Error, InvalidError
from .functions import Function, FunctionCall
from .partial import (
    asgi_app,
    batched,
    clustered,
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
    Dict,
    FilePatternMatcher,
    Image,
    NetworkFileSystem,
    Period,
    Proxy,
    Queue,
    Retries,
    Sandbox,
    SchedulerPlacement,
    Secret,
    Tunnel,
    Volume,
    enable_output,
    forward,
    interact,
)

__version__ = "1.6.4"  # the Modal release whose behaviour this follows

submodules.install()
submodules.adopt_modal_names()


def __getattr__(name: str) -> object:
    if name == "Stub":
        raise AttributeError(
            "Module 'modal' has no attribute 'Stub'. Use `modal.App` instead. This is a simple name change."
        )
    raise AttributeError(f"module 'modal' has no attribute '{name}' (mwtui runs Modal apps locally and does "
                         "not provide it)")


__all__ = [
    "App", "CloudBucketMount", "Cls", "Cron", "Dict", "Error", "FilePatternMatcher", "Function", "FunctionCall",
    "Image", "InvalidError", "LocalEntrypoint", "NetworkFileSystem", "Period", "Proxy", "Queue", "Retries",
    "Sandbox", "SchedulerPlacement", "Secret", "Tunnel", "Volume", "asgi_app", "batched", "clustered",
    "concurrent", "current_function_call_id", "current_input_id", "enable_output", "enter", "exception", "exit",
    "fastapi_endpoint", "forward", "interact", "is_local", "method", "parameter", "web_endpoint", "web_server",
    "wsgi_app",
]
