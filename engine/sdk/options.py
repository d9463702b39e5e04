"""The keyword arguments of `@app.function` / `@app.cls`: accepted names, old names, checks, defaults.

Checks run when the decorator factory is applied, with Modal 1.6.4's messages. Where the seed wins over
1.6.4, the old knob names are accepted with a warning that names the new one, and mapped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .deprecation import deprecation_warning
from .exception import InvalidError
from .model import Options
from .partial import PartialFunction

if TYPE_CHECKING:
    from .app import App

# Every keyword Modal's @app.function accepts (1.6.4), plus the names it used to accept.
FUNCTION_KEYWORDS = frozenset({
    "image", "schedule", "env", "secrets", "gpu", "serialized", "network_file_systems", "volumes", "cpu",
    "memory", "ephemeral_disk", "min_containers", "max_containers", "buffer_containers", "scaledown_window",
    "proxy", "retries", "timeout", "startup_timeout", "name", "is_generator", "cloud", "region",
    "routing_region", "nonpreemptible", "enable_memory_snapshot", "block_network", "restrict_modal_access",
    "single_use_containers", "i6pn", "include_source", "experimental_options", "_experimental_restrict_output",
    "max_inputs", "_experimental_buffer_containers", "_experimental_scheduler_placement",
    "scheduler_placement", "_experimental_proxy_ip", "keep_warm", "concurrency_limit",
    "container_idle_timeout", "allow_concurrent_inputs",
})
# @app.cls takes the same, minus what only makes sense for one function.
CLS_KEYWORDS = FUNCTION_KEYWORDS - {"schedule", "name", "is_generator"}

RENAMED = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
}


def check_keywords(kwargs: dict[str, Any], accepted: frozenset[str], qualname: str) -> None:
    """Unknown keywords (e.g. the removed `mounts=`) fail as a plain TypeError, as in Modal."""
    for key in kwargs:
        if key not in accepted:
            raise TypeError(f"{qualname}() got an unexpected keyword argument '{key}'")


def check_max_inputs_keyword(kwargs: dict[str, Any]) -> None:
    """`max_inputs=` on @app.function / @app.cls is the old spelling of `single_use_containers=True`."""
    max_inputs = kwargs.get("max_inputs")
    if max_inputs is None:
        return
    if not isinstance(max_inputs, int):
        raise InvalidError(f"`max_inputs` must be an int, not {type(max_inputs).__name__}")
    if max_inputs <= 0:
        raise InvalidError("`max_inputs` must be positive")
    if max_inputs > 1:
        raise InvalidError("Only `max_inputs=1` is currently supported")
    deprecation_warning(
        (2025, 12, 16), "The `max_inputs` parameter is deprecated. Please set `single_use_containers=True` instead."
    )


def map_renamed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Old autoscaler names become the new ones, with a warning naming the new one."""
    out = dict(kwargs)
    for old, new in RENAMED.items():
        if old not in out:
            continue
        deprecation_warning((2025, 2, 24), f"The '{old}' parameter has been renamed to '{new}'.")
        if new in out:
            raise InvalidError(f"Both '{old}' and '{new}' were given; keep only '{new}'.")
        out[new] = out.pop(old)
    return out


def _check_target_inputs(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidError(f"The `target_inputs` argument must be a number, not {type(value).__name__}.")
    if not math.isfinite(value):
        raise InvalidError(f"The `target_inputs` argument must be finite, not {value}.")
    if value < 0:
        raise InvalidError("The `target_inputs` argument must be non-negative.")
    if not isinstance(value, int):
        raise InvalidError(
            "The `target_inputs` argument must be an integer; fractional values are only supported for Servers."
        )


def prepare(kwargs: dict[str, Any], accepted: frozenset[str], qualname: str) -> dict[str, Any]:
    """What runs when `app.function(...)` / `app.cls(...)` is called, before it sees the function:
    unknown keywords, old names (mapped, with a warning), `max_inputs=`."""
    check_keywords(kwargs, accepted, qualname)
    out = map_renamed(kwargs)
    if "allow_concurrent_inputs" in out:
        deprecation_warning(
            (2025, 4, 9),
            "The 'allow_concurrent_inputs' parameter is deprecated. Use the '@modal.concurrent' decorator instead.",
        )
    check_max_inputs_keyword(out)
    return out


def concurrency(kwargs: dict[str, Any], pf: PartialFunction | None) -> tuple[int, int]:
    """(max_inputs, target_inputs) from `@modal.concurrent`, or from the old `allow_concurrent_inputs`
    (the decorator wins when both are given)."""
    old = kwargs.get("allow_concurrent_inputs")
    if pf is not None and pf.concurrent:
        if pf.max_inputs is None:
            raise TypeError("`@modal.concurrent()` missing required argument: `max_inputs`.")
        max_inputs, target = pf.max_inputs, pf.target_inputs
    elif old is not None:
        max_inputs, target = old, None
    else:
        return 1, 1
    if isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs < 1:
        raise InvalidError(f"`max_inputs` must be a positive integer, not {max_inputs!r}.")
    if target is None:
        return max_inputs, max_inputs
    _check_target_inputs(target)
    return max_inputs, target


def _int_or_none(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, int):
        raise InvalidError(f"`{name}` must be an int, not {type(value).__name__}")


def check_retries(retries: Any, *, is_web: bool, is_generator: bool, owner: str) -> None:
    from .resources import Retries

    if retries is None:
        return
    if not isinstance(retries, (int, Retries)):
        raise InvalidError(
            f"Retries parameter must be an integer or instance of modal.Retries. Found: {type(retries)} on {owner}."
        )
    if is_web:
        raise InvalidError("Web Functions do not support retries.")
    if is_generator:
        raise InvalidError("Generator Functions do not support retries.")


def resolve(app: App, kwargs: dict[str, Any], pf: PartialFunction | None, given: dict[str, Any]) -> Options:
    """Turn keywords (already through `prepare`) into Options, with Modal's defaults for anything not
    given. `given` is what the user wrote, kept in `Options.extra`."""
    if "timeout" in kwargs and kwargs["timeout"] is None:
        raise InvalidError("The `timeout` parameter cannot be set to None: https://modal.com/docs/guide/timeouts")
    timeout = kwargs.get("timeout", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InvalidError(f"The `timeout` parameter must be a positive number of seconds, not {timeout!r}.")

    min_containers = kwargs.get("min_containers")
    max_containers = kwargs.get("max_containers")
    buffer_containers = kwargs.get("buffer_containers", kwargs.get("_experimental_buffer_containers"))
    scaledown_window = kwargs.get("scaledown_window")
    if min_containers is not None and not isinstance(min_containers, int):
        raise InvalidError(f"`min_containers` must be an int, not {type(min_containers).__name__}")
    _int_or_none("max_containers", max_containers)
    _int_or_none("buffer_containers", buffer_containers)
    if min_containers is not None and max_containers is not None and max_containers < min_containers:
        raise InvalidError(
            f"`min_containers` ({min_containers}) cannot be greater than `max_containers` ({max_containers})"
        )
    if scaledown_window is not None and not (2 <= scaledown_window <= 3600):
        raise InvalidError("`scaledown_window` must be between 2 and 3600 (inclusive)")

    max_inputs, target_inputs = concurrency(kwargs, pf)
    batch = pf.batch_max_size if pf is not None else None
    if batch:  # a replica takes a whole batch of inputs at once
        max_inputs, target_inputs = max(max_inputs, batch), max(target_inputs, batch)

    env = {k: v for k, v in (kwargs.get("env") or {}).items() if v is not None}
    secrets = list(kwargs.get("secrets") or [])
    if not isinstance(kwargs.get("secrets") or [], (list, tuple)):
        raise InvalidError("`secrets=` has to be a list or tuple of `modal.Secret` objects")
    startup_timeout = kwargs.get("startup_timeout")
    return Options(
        min_containers=min_containers or 0,
        max_containers=max_containers,
        buffer_containers=buffer_containers or 0,
        scaledown_window=60 if scaledown_window is None else scaledown_window,
        timeout=timeout,
        startup_timeout=startup_timeout or timeout,
        max_inputs=max_inputs,
        target_inputs=target_inputs,
        batch_max_size=batch,
        batch_wait_ms=(pf.batch_wait_ms or 0) if batch and pf is not None else 0,
        single_use_containers=bool(kwargs.get("single_use_containers")) or kwargs.get("max_inputs") == 1,
        env=env,
        secrets=[*app.secrets, *secrets],
        volumes={**app.volumes, **dict(kwargs.get("volumes") or {})},
        image=kwargs.get("image") or app.image,
        extra=dict(given),
    )
