"""Modal's label rules, done locally: pure functions, no I/O.

On Modal the server turns an app and function name into the URL label; mwtui serves each endpoint at
`http://<label>.localhost:<port>`, so it needs the same rules. Deployed apps get no `-dev` suffix, and
neither do we: there is no deployed URL to keep apart from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

MAX_LABEL_LENGTH = 63  # one DNS label
_KEEP = 56  # 63 - len("-") - 6 hash characters

_INVALID = re.compile(r"[^a-z0-9-]")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class Labelled(Protocol):
    """What the conflict finder needs of an endpoint (an `EndpointSpec` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def custom_domains(self) -> Sequence[str]: ...


def normalize(text: str) -> str:
    """Lowercase; every character outside a-z, 0-9 and '-' becomes '-'."""
    return _INVALID.sub("-", text.lower())


def truncate(label: str) -> str:
    """Labels over 63 characters keep 56, then '-' and the first 6 hex digits of the full label's SHA-256."""
    if len(label) <= MAX_LABEL_LENGTH:
        return label
    return f"{label[:_KEEP]}-{hashlib.sha256(label.encode()).hexdigest()[:6]}"


def default_label(app_name: str, tag: str) -> str:
    """`<app>-<function>` or `<app>-<class>-<method>`: ("demo", "MyAPI.health") -> "demo-myapi-health"."""
    return truncate(normalize(f"{app_name}-{tag}"))


def call_label(app_name: str, pool: str) -> str:
    """The internal label other pools call a function or class by: `<pool>.<app>.call` (served as
    `<pool>.<app>.call.localhost`, never listed, no URL): ("demo", "Model") -> "model.demo.call"."""
    return f"{truncate(normalize(pool))}.{truncate(normalize(app_name))}.call"


def is_dns_safe(label: str) -> bool:
    """Modal's (unused) client check: lowercase a-z0-9-, at most 63, no '-' at either end, not all digits."""
    return len(label) <= MAX_LABEL_LENGTH and bool(_DNS_LABEL.match(label)) and not label.isdigit()


def label_warning(endpoint: str, label: str) -> str | None:
    """A warning for a custom label that Modal's servers would not take as is; None when it is fine."""
    if is_dns_safe(label):
        return None
    return (
        f"{endpoint}: label '{label}' is not a valid DNS label (use only lowercase letters, digits and '-', "
        f"at most {MAX_LABEL_LENGTH} characters, not starting or ending with '-', not all digits); "
        f"it is served locally as given, but Modal may reject it"
    )


def _domain_key(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def find_conflicts(endpoints: Iterable[Labelled]) -> list[str]:
    """One error message per label or custom domain that two endpoints share, naming both endpoints."""
    errors: list[str] = []
    by_label: dict[str, str] = {}
    by_domain: dict[str, str] = {}
    for ep in endpoints:
        key = ep.label.lower()
        first = by_label.setdefault(key, ep.name)
        if first != ep.name:
            errors.append(
                f"The label '{ep.label}' is used by both `{first}` and `{ep.name}`; each endpoint needs its own "
                f"label, so give one of them a different `label=`."
            )
        for domain in ep.custom_domains:
            dkey = _domain_key(domain)
            owner = by_domain.setdefault(dkey, ep.name)
            if owner != ep.name:
                errors.append(
                    f"The custom domain '{domain}' is used by both `{owner}` and `{ep.name}`; a custom domain "
                    f"can serve only one endpoint."
                )
    return errors


def label_url(label: str, port: int | None) -> str:
    """Where the gateway serves an endpoint labelled `label` (the form `modal serve` prints)."""
    return f"http://{label}.localhost:{port}"
