"""How a call to a function's pool travels: the request a caller sends and the reply its replica gives.

Arguments, results and exceptions are serialized with cloudpickle, as Modal serializes them, so that
what works there (lambdas, local classes, dataclasses of the app's own module) works here. Both sides
are Python in the same project with the same packages: a pickle is trusted as Modal trusts its own.

    request: POST, content-type CONTENT_TYPE, header TOKEN_HEADER (the engine's call token), body =
             cloudpickle of {"method", "args", "kwargs", "input_id", "function_call_id", "recorded"}
             ("method": None for a function, the method's name for a class); the path names the
             caller and the callee (`/from/<pool>/<callee>`, for the callee's log and its callers)
    reply:   200, the same content type, body = pickle of {"value": ...}, or of {"error": cloudpickle of
             the exception or None, "exception": its repr, "traceback": text}; 400 with a text body
             when the request itself cannot be read (a bug of ours, or a caller of another version)

The caller handles a failed call as Modal's client does (`_process_result` in modal/_utils/
function_utils.py): the exception re-raised with the callee's traceback (here as a note); one that could
not be pickled there as `RemoteError(repr)`; one that cannot be unpickled here as `ExecutionError`
with Modal's message and the remote traceback.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .exception import ExecutionError, RemoteError, SerializationError

CONTENT_TYPE = "application/x-mwtui-call"  # no browser sends it cross-site without asking first (CORS)
TOKEN_HEADER = "x-mwtui-call-token"
REMOTE_TRACEBACK = "Traceback in the called function's replica:\n"


@dataclass(frozen=True)
class Call:
    method: str | None  # None: the function itself; else a method of the class's instance
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    # The input this call is, as the caller made it (modal.current_input_id() in the callee, and the
    # parent of the calls it makes); "" for none. `recorded`: the caller wrote it in the store.
    input_id: str = ""
    function_call_id: str = ""
    recorded: bool = False
    spawned: bool = False  # by .spawn(): the callee takes the call over in the store and records its outcome


class BadCall(Exception):
    """A request body that is not a call."""


def encode_call(call: Call) -> bytes:
    return cloudpickle.dumps({"method": call.method, "args": tuple(call.args), "kwargs": dict(call.kwargs),
                              "input_id": call.input_id, "function_call_id": call.function_call_id,
                              "recorded": call.recorded, "spawned": call.spawned})


def decode_call(body: bytes) -> Call:
    try:
        raw = pickle.loads(body)
        method, args, kwargs = raw["method"], raw["args"], raw["kwargs"]
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is not a call
        raise BadCall(f"not a call: {type(exc).__name__}: {exc}") from exc
    if (method is not None and not isinstance(method, str)) or not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise BadCall("not a call: method, args or kwargs of the wrong type")
    ids = (str(raw.get("input_id") or ""), str(raw.get("function_call_id") or ""))
    return Call(method, args, kwargs, *ids, bool(raw.get("recorded")), bool(raw.get("spawned")))


def encode_value(value: Any) -> bytes:
    """The reply for a result; a result that cannot be pickled is the call's error."""
    try:
        return pickle.dumps({"value": cloudpickle.dumps(value)})
    except Exception as exc:  # noqa: BLE001
        error = SerializationError(f"Failed to serialize the function's result: {type(exc).__name__}: {exc}")
        return encode_error(error, "")


def encode_error(exc: BaseException, traceback_text: str) -> bytes:
    try:
        data: bytes | None = cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - it holds something unpicklable: the caller gets its repr
        data = None
    return pickle.dumps({"error": data, "exception": repr(exc), "traceback": traceback_text})


def decode_reply(body: bytes) -> Any:
    """The call's result, or its exception raised here (with the callee's traceback as a note)."""
    reply = pickle.loads(body)
    if "value" in reply:
        return pickle.loads(reply["value"])
    text = reply.get("traceback") or ""
    if reply.get("error") is None:
        raise RemoteError(reply.get("exception") or "the call failed")
    try:
        error = pickle.loads(reply["error"])
    except Exception as exc:  # noqa: BLE001 - a class this side does not have, say
        raise ExecutionError(
            "Could not deserialize remote exception due to local error:\n"
            f"{exc}\n"
            "This can happen if your local environment does not have the remote exception definitions.\n"
            "Here is the remote traceback:\n"
            f"{text}"
        ) from None
    if not isinstance(error, BaseException):
        raise ExecutionError(f"Got remote exception of incorrect type {type(error)}")
    if text:
        error.add_note(REMOTE_TRACEBACK + text.rstrip())
    raise error
