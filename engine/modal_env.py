"""The variables Modal's runtime sets in its containers, with the values a local replica gets.

Modal's guide (modal.com/docs/guide/environment_variables): every container has MODAL_CLOUD_PROVIDER,
MODAL_IMAGE_ID, MODAL_REGION and MODAL_TASK_ID; a Function's container also has MODAL_ENVIRONMENT,
MODAL_IS_REMOTE ("1") and MODAL_IDENTITY_TOKEN. Their keys are reserved: a Function's secrets and `env=`
cannot override them.

The supervisor adds `replica_env()` to each replica's environment, so the variables are there before the
worker starts, forked from the zygote or started cold alike, and never in the engine's, the gateway's or
the zygote's own environment (nor while discovery imports the file: `modal.is_local()` is True there, as
for `modal serve`'s local import). MODAL_IDENTITY_TOKEN is left out: it is an OIDC token that Modal's
issuer signs, and no service could verify one made up here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

TASK_ID = "MODAL_TASK_ID"
IMAGE_ID = "MODAL_IMAGE_ID"
REGION = "MODAL_REGION"
CLOUD_PROVIDER = "MODAL_CLOUD_PROVIDER"
ENVIRONMENT = "MODAL_ENVIRONMENT"
IS_REMOTE = "MODAL_IS_REMOTE"
RESERVED = frozenset({TASK_ID, IMAGE_ID, REGION, CLOUD_PROVIDER, ENVIRONMENT, IS_REMOTE})

LOCAL_REGION = "local"  # not a real cloud's region, so code that branches on one takes its default path
LOCAL_CLOUD_PROVIDER = "CLOUD_PROVIDER_LOCAL"  # Modal's enum spelling (CLOUD_PROVIDER_AWS, ...), for none
DEFAULT_ENVIRONMENT = "main"  # every Modal workspace's default Environment

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_task_id() -> str:
    """`ta-` and a ULID (26 Crockford base32 characters: 48 bits of milliseconds, 80 random bits), the
    shape of Modal's task ids."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "ta-" + "".join(reversed(chars))


def _canonical(value: Any) -> Any:
    """A form of a builder call's argument that is the same in every process: no object addresses."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(json.dumps(_canonical(v), sort_keys=True) for v in value)
    calls = getattr(value, "calls", None)  # another modal.Image (e.g. a base image)
    if isinstance(calls, tuple):
        return ["image", _canonical(calls)]
    if callable(value):  # run_function(f): by name, as its code is what the image would run
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    return type(value).__qualname__


def image_id(calls: Sequence[Any]) -> str:
    """`im-` and 22 base62 characters (the shape of Modal's object ids), from a hash of the image's
    builder calls: the same definition gets the same id in every replica and every run; a changed one
    gets a new id, as a rebuilt image does on Modal."""
    text = json.dumps(_canonical(list(calls)), sort_keys=True, default=str)
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:17], "big")
    chars = []
    for _ in range(22):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "im-" + "".join(reversed(chars))


def image_id_of_plan(plan: str) -> str:
    """The pool's image id, which discovery put in its plan (see `sdk.environment.plan`); without one,
    the default image's, as a function without `image=` runs on Modal's default image."""
    if plan:
        found = json.loads(plan).get("image_id")
        if isinstance(found, str) and found:
            return found
    return image_id(())


def replica_env(plan: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The reserved variables for one new replica: a fresh task id each time (a restart is a new
    container on Modal too)."""
    return {
        TASK_ID: new_task_id(),
        IMAGE_ID: image_id_of_plan(plan),
        REGION: LOCAL_REGION,
        CLOUD_PROVIDER: LOCAL_CLOUD_PROVIDER,
        # The Environment the user chose for the modal CLI (`MODAL_ENVIRONMENT`), else Modal's default.
        ENVIRONMENT: environ.get(ENVIRONMENT) or DEFAULT_ENVIRONMENT,
        IS_REMOTE: "1",
    }
