"""Messages between the widgets and the app: what happened, as classes, so handlers read by name."""

from __future__ import annotations

from mwtui.engine.manifest import LoadError
from textual.message import Message


class EngineReady(Message):
    """The engine started: the gateway listens and the pools are spawning."""


class EngineFailed(Message):
    """The engine could not start: the app file does not load, or the gateway cannot listen."""

    def __init__(self, title: str, error: LoadError | str) -> None:
        super().__init__()
        self.title = title
        self.error = error


class FilterClosed(Message):
    """The log filter input was submitted or dismissed: focus goes back to the table."""


class CommandDone(Message):
    """A command that ran in a worker finished; `text` says how, for a notification."""

    def __init__(self, text: str, severity: str = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity
