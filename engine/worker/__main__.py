import time

_STARTED = time.monotonic()  # before our own imports, so that startup_ms counts them

from typing import NoReturn  # noqa: E402

from .replica import main  # noqa: E402


def run(argv: list[str], started: float) -> NoReturn:
    """One replica in this very process, as `python -m mwtui.engine.worker *argv` would run it: what a
    child forked by the zygote calls once it looks like a fresh interpreter. `started` (a
    time.monotonic() value) is when the replica was asked for, the zero of its startup_ms."""
    main(argv, started=started)


if __name__ == "__main__":
    main(started=_STARTED)
