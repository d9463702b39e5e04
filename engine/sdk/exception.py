"""Modal's exception classes, with the same names and bases, so user code can catch them."""


class Error(Exception):
    """Base class of every error the `modal` API raises."""


class InvalidError(Error):
    """A decorator or argument was used the way Modal forbids."""


class ExecutionError(Error):
    """Something failed while running user code (startup, lifespan)."""


class NotFoundError(Error):
    """A named object (secret, volume, function) does not exist."""


class TimeoutError(Error):  # noqa: A001 - Modal's own name
    """A function call ran out of time."""


class FunctionTimeoutError(TimeoutError):
    """A function input exceeded its timeout."""


class DeprecationError(UserWarning):
    """Modal's deprecation category: a warning class that Modal sometimes raises."""


class PendingDeprecationError(UserWarning):
    """Modal's early-deprecation category."""
