import time

_STARTED = time.monotonic()  # before our own imports, so that startup_ms counts them

from .replica import main  # noqa: E402

if __name__ == "__main__":
    main(started=_STARTED)
