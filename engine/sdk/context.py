"""What user code can ask about the input it is serving: `modal.current_input_id()` and friends.

A replica sets these around each request; outside a request they are None, as on Modal.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

INPUT_ID: ContextVar[str | None] = ContextVar("modal_input_id", default=None)
FUNCTION_CALL_ID: ContextVar[str | None] = ContextVar("modal_function_call_id", default=None)


def is_local() -> bool:
    """False inside a replica (the "container"), True anywhere else, as on Modal."""
    return os.environ.get("MODAL_IS_REMOTE") != "1"


def current_input_id() -> str | None:
    return INPUT_ID.get()


def current_function_call_id() -> str | None:
    return FUNCTION_CALL_ID.get()
