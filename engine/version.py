"""mwtui's version, as installed (`pip install`, `make`'s editable install), for `--version`, the
screen's header and `/api/app`."""

from __future__ import annotations

from functools import cache

FALLBACK = "0.1.0+source"  # run from a checkout that was never installed


@cache
def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("mwtui")
    except PackageNotFoundError:
        return FALLBACK
