"""Text read from a file, made safe to print on a terminal.

tokens.json and secrets.json may have been edited by hand: a name holding an escape sequence would
otherwise be acted on by the terminal (recolour, retitle, move the cursor, hide the rest of a line).
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character a terminal would act on or hide (control characters, direction
    overrides, line and paragraph separators; every non-printable one) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
