"""The gateway's HTTP limits: defaults, their command-line flags, and the argv that carries them.

Shared by the gateway process (`python -m mwtui.engine.gateway --max-body 10M ...`) and the engine
(`GatewayLink(limits=...)`); `add_arguments` lets `mwtui serve` offer the same flags. Imports nothing
heavy: the engine process loads this without the proxy.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from typing import Any

MAX_HEAD = 64 * 1024  # request line plus headers (fixed: the and nginx's large-buffer order)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`1048576`, `512k`, `10M`, `1G` (powers of 1024; an optional trailing B or iB) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (say 1048576, 512k, 10M or 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _seconds(text: str) -> float:
    """A timeout of 0 (off) or more; `nan` and `inf` are refused, since they would never fire."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also false for nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more, finite)")
    return value


def _positive_seconds(text: str) -> float:
    """A timeout that must hold: above zero and finite (`nan` and `inf` would never fire)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def host_name(text: str) -> str:
    """A name for --allow-host: a DNS name (an IDN is taken in its ASCII form), no port."""
    name = text.strip().lower().rstrip(".")
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        ascii_name = ""
    if not ascii_name or not re.fullmatch(r"[a-z0-9_~.-]{1,253}", ascii_name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name (say myhost.lan or api.example.com)")
    return ascii_name


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


@dataclass(frozen=True)
class Limits:
    max_body: int = 1 << 30  # bytes of request body; 0: no limit. Over it: 413
    header_timeout: float = 15.0  # s for a request head to arrive whole; 0: none. Over it: 408, close
    keepalive_timeout: float = 75.0  # s an idle keep-alive connection stays open (nginx's default)
    # A request body up to this size is gathered whole before a replica is taken, so that a slow or
    # stalled upload holds no replica slot (nginx buffers them too); larger ones stream. 0: stream all.
    # 64 KiB: most JSON and form bodies, and the same bound per connection as a request head.
    buffer_body: int = 64 * 1024
    body_timeout: float = 60.0  # s between two reads of a request body (nginx's client_body_timeout): 408
    max_queue: int = 10000  # requests waiting per endpoint for a free replica; beyond that: 503
    allow_hosts: str = ""  # comma-separated names own ports answer to besides ours (--allow-host, repeated)
    # The request inspector's memory per endpoint (inspector.py); 0 (--no-inspect): nothing is captured.
    # 2 MiB: 100 endpoints with full rings hold about 200 MiB.
    inspect_ring: int = 2 << 20

    def allowed_hosts(self) -> list[str]:
        return [h for h in self.allow_hosts.split(",") if h]

    def argv(self) -> list[str]:
        """Flags for the gateway process that differ from the defaults."""
        out: list[str] = []
        default = Limits()
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(default, f.name):
                continue
            if f.name == "allow_hosts":
                for name in self.allowed_hosts():
                    out += ["--allow-host", name]
            else:
                out += ["--" + f.name.replace("_", "-"), str(value)]
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Limits:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(args, f.name, None)
            if isinstance(value, list):  # a repeated flag (--allow-host)
                value = ",".join(value)
            if value is not None:
                kw[f.name] = value
        return cls(**kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The limit flags; unset ones keep the defaults above (so `from_args` can tell them apart)."""
    d = Limits()
    parser.add_argument(
        "--max-body", type=parse_size, default=None, metavar="SIZE",
        help=f"largest request body, e.g. 10M or 1G; larger gets 413 (default {d.max_body >> 30}G; 0: no limit)",
    )
    parser.add_argument(
        "--header-timeout", type=_seconds, default=None, metavar="SECONDS",
        help=f"a request head must arrive whole within this, else 408 and close (default {d.header_timeout:g}; 0: none)",
    )
    parser.add_argument(
        "--keepalive-timeout", type=_seconds, default=None, metavar="SECONDS",
        help=f"close idle keep-alive connections after this (default {d.keepalive_timeout:g}; 0: never)",
    )
    parser.add_argument(
        "--buffer-body", type=parse_size, default=None, metavar="SIZE",
        help=f"gather request bodies up to this size before a replica is taken; larger ones stream "
             f"(default {d.buffer_body >> 10}k; 0: stream every body)",
    )
    parser.add_argument(
        "--body-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
        help=f"a request body that sends nothing for this long gets 408 and is closed (default {d.body_timeout:g})",
    )
    parser.add_argument(
        "--max-queue", type=_count, default=None, metavar="N",
        help=f"requests waiting per endpoint for a free replica before 503 (default {d.max_queue})",
    )
    parser.add_argument(
        "--inspect-ring", type=parse_size, default=None, metavar="SIZE",
        help=f"memory per endpoint for the request inspector's recent requests (default {d.inspect_ring >> 20}M)",
    )
    parser.add_argument(
        "--no-inspect", dest="inspect_ring", action="store_const", const=0,
        help="capture no requests for the inspector (i, /api/requests)",
    )
    parser.add_argument(
        "--allow-host", dest="allow_hosts", action="append", type=host_name, default=None, metavar="NAME",
        help="a name the endpoints' own ports answer to besides localhost, IP addresses, labels and custom "
             "domains (against DNS rebinding, others get 403); repeat for more",
    )
