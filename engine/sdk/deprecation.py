"""Deprecation warnings attributed to the user's line, the way Modal attributes them.

Modal walks the stack past its own frames so that the warning names the line in the app file that used
the old API; discovery then reports it as `file:line: text`.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import date

from .exception import DeprecationError

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))


def user_frame_location() -> tuple[str, int]:
    """The innermost frame that is not this package's (nor contextlib's, which runs `with` blocks)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_SDK_DIR + os.sep) and not filename.endswith(f"{os.sep}contextlib.py"):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return "<unknown>", 0


def deprecation_warning(deprecated_on: tuple[int, int, int], message: str) -> None:
    filename, lineno = user_frame_location()
    warnings.warn_explicit(f"{date(*deprecated_on)}: {message}", DeprecationError, filename, lineno)


def warn_at_user_line(message: str, category: type[Warning] = UserWarning) -> None:
    filename, lineno = user_frame_location()
    warnings.warn_explicit(message, category, filename, lineno)
