"""Proxy auth (`requires_proxy_auth`): the token check the gateway calls with `Modal-Key`/`Modal-Secret`.

Modal's edge rejects a request before any user code runs; so does the gateway. The check is a plain
callable, `check(key, secret) -> bool`; it runs on the request path, so it must not block. The real
one is the token store's (`mwtui token create|list|revoke`), which follows the file as it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TokenCheck = Callable[[str, str], bool]


def load_token_check(path: str | Path | None = None) -> TokenCheck:
    """The check against `path` (default `$MWTUI_HOME/tokens.json`); a missing file denies all."""
    from ..tokens import TokenCheck as FileCheck

    return FileCheck(path)
