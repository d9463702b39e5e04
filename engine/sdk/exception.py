"""Modal's exception classes, with the same names and bases, so user code can catch them."""


class Error(Exception):
    """Base class of every error the `modal` API raises."""


class AlreadyExistsError(Error):
    pass


class AuthError(Error):
    pass


class InternalError(Error):
    pass


class InvalidError(Error):
    """A decorator or argument was used the way Modal forbids."""


class ConflictError(InvalidError):
    pass


class NotFoundError(Error):
    """A named object (secret, volume, function) does not exist."""


class PermissionDeniedError(Error):
    pass


class ResourceExhaustedError(Error):
    pass


class ServiceError(Error):
    pass


class UnimplementedError(Error):
    pass


class RemoteError(Error):
    pass


class ImageBuildError(RemoteError):
    pass


class TimeoutError(Error):  # noqa: A001 - Modal's own name
    """A function call ran out of time."""


class FunctionTimeoutError(TimeoutError):
    """A function input exceeded its timeout."""


class SandboxTimeoutError(TimeoutError):
    pass


class OutputExpiredError(TimeoutError):
    pass


class SandboxTerminatedError(Error):
    pass


class ConnectionError(Error):  # noqa: A001 - Modal's own name
    pass


class VersionError(Error):
    pass


class ExecutionError(Error):
    """Something failed while running user code (startup, lifespan)."""


class DeserializationError(Error):
    pass


class SerializationError(Error):
    pass


class RequestSizeError(Error):
    pass


class ClientClosed(Error):
    pass


class InternalFailure(Error):
    """Modal's "retriable internal error": an input lost with its container (on Modal, a worker
    preempted or gone). Locally: a spawned call whose replica stopped before it finished."""


class InputCancellation(BaseException):
    """Raised inside an input that was cancelled; a BaseException so that `except Exception` lets it by."""


class DeprecationError(UserWarning):
    """Modal's deprecation category: a warning class that Modal sometimes raises."""


class PendingDeprecationError(UserWarning):
    """Modal's early-deprecation category."""


class ServerWarning(UserWarning):
    pass


class AsyncUsageWarning(UserWarning):
    pass


# Modal's names, not ours: tracebacks print `modal.exception.InvalidError`, `type(e).__module__` reads as
# on Modal, and pickle finds each class again through sys.modules["modal.exception"] (see loader.install_sdk).
for _cls in list(globals().values()):
    if isinstance(_cls, type) and _cls.__module__ == __name__:
        _cls.__module__ = "modal.exception"
del _cls
