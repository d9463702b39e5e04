"""Proxy auth (`requires_proxy_auth`): the token check the gateway calls with `Modal-Key`/`Modal-Secret`.

Modal's edge rejects a request before any user code runs; so does the gateway. The check is a plain
callable so that the token store (`mwtui token create|list|revoke`, a later piece) can plug in by
making `load_token_check` return its own; it runs on the request path, so it must not block.
"""

from __future__ import annotations

from collections.abc import Callable

TokenCheck = Callable[[str, str], bool]


def deny_all(key: str, secret: str) -> bool:
    """Until mwtui has a token store, no credentials are valid."""
    return False


def load_token_check() -> TokenCheck:
    return deny_all
