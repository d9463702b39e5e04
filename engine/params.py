"""Class parameters (`name: str = modal.parameter()`) on web endpoints: from a request's query string to
the values one replica pool is built with.

On Modal, a web endpoint of a parametrized class takes the values from query arguments of the same names,
and each distinct set of values gets its own containers. The gateway uses `from_query` to validate a
request (a 400 with a plain-text reason for a missing or malformed value, before any user code runs)
and `pool_key` to name the pool of replicas for those values; the replica gets the same values as JSON
(`--params`) and turns them back into Python values with `decode`.

Specs come from the manifest: `[{"name": "size", "type": "int", "default": 3}, {"name": "who",
"type": "str"}]` (no "default": required). Values travel as JSON, bytes as text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

TYPES = ("int", "str", "bytes", "bool")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
BAD_STATUS = 400


class ParamError(ValueError):
    """The request cannot be given to the class: `status` and `text` make the response."""

    def __init__(self, text: str, status: int = BAD_STATUS) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # one of TYPES
    has_default: bool = False
    default: Any = None  # JSON form

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ParamSpec:
        return cls(str(d["name"]), str(d["type"]), "default" in d, d.get("default"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.has_default:
            out["default"] = self.default
        return out


def specs(data: Sequence[Mapping[str, Any] | ParamSpec]) -> list[ParamSpec]:
    return [d if isinstance(d, ParamSpec) else ParamSpec.from_json(d) for d in data]


def to_json_value(value: Any) -> Any:
    """A parameter value (int, str, bytes or bool) as JSON; bytes become text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def parse_text(spec: ParamSpec, text: str) -> Any:
    """One query argument, converted by the declared type (JSON form). Raises ParamError."""
    if spec.type in ("str", "bytes"):
        return text
    if spec.type == "bool":
        lowered = text.strip().lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        raise ParamError(f"class parameter '{spec.name}' must be a boolean (true or false), not {text!r}")
    try:
        return int(text.strip())
    except ValueError:
        raise ParamError(f"class parameter '{spec.name}' must be an integer, not {text!r}") from None


def from_query(param_specs: Sequence[Mapping[str, Any] | ParamSpec], query: str | bytes) -> dict[str, Any]:
    """Every parameter's value (given, else its default) in JSON form, from a raw query string. The last
    of repeated arguments wins, as in Starlette. Raises ParamError for a missing required one or a value
    that does not fit its type."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    args = parse_qs(text, keep_blank_values=True)
    out: dict[str, Any] = {}
    for spec in specs(param_specs):
        if spec.name in args:
            out[spec.name] = parse_text(spec, args[spec.name][-1])
        elif spec.has_default:
            out[spec.name] = spec.default
        else:
            raise ParamError(
                f"missing required class parameter '{spec.name}': pass it in the query string, "
                f"e.g. ?{spec.name}=..."
            )
    return out


def pool_key(values: Mapping[str, Any]) -> str:
    """The same values give the same key, whatever the order or spelling of the query (`?n=01` and
    `?n=1` are one pool): the canonical JSON, which is also what `--params` takes."""
    return json.dumps(dict(values), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def query_of(values: Mapping[str, Any]) -> str:
    """Values (as `from_query` gives them, in declaration order) as the query string that asks for
    them: `name=ann&times=1&loud=false`. It names a parameter set on screen and in routes, so
    that `Greeter.greet?name=ann&times=1&loud=false` reads as the request that reaches it."""
    parts = []
    for name, value in values.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(to_json_value(value))
        parts.append(f"{quote(name, safe='')}={quote(text, safe='')}")
    return "&".join(parts)


def variant_name(base: str, values: Mapping[str, Any]) -> str:
    """The name of the endpoint (or pool) `base` for one set of values: `Greeter.greet?name=ann&times=1`."""
    return f"{base}?{query_of(values)}"


def variant_id(pool: str, values: Mapping[str, Any]) -> str:
    """A short, file-name-safe id for a pool's parameter set (its replicas' sockets are named after
    it, and a Unix socket path must stay under 108 bytes): `Greeter~1a2b3c4d`."""
    return f"{pool}~{hashlib.sha1(pool_key(values).encode()).hexdigest()[:8]}"


def decode(param_specs: Sequence[Mapping[str, Any] | ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON values (from `--params`) as the Python values the class declares. Raises ParamError for an
    unknown name or a value of the wrong type."""
    by_name = {s.name: s for s in specs(param_specs)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            raise ParamError(f"unknown class parameter '{name}'; the class has: {', '.join(by_name) or 'none'}")
        if spec.type == "bytes" and isinstance(value, str):
            out[name] = value.encode("utf-8", "surrogateescape")
        elif spec.type == "bool" and isinstance(value, bool):
            out[name] = value
        elif spec.type == "int" and isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
        elif spec.type == "str" and isinstance(value, str):
            out[name] = value
        elif isinstance(value, str):
            out[name] = parse_text(spec, value)  # a query argument passed as it came
        else:
            raise ParamError(f"class parameter '{name}' must be {spec.type}, not {type(value).__name__}")
    return out
