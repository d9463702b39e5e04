"""`mwtui secret set|list|delete`: the named secrets that `modal.Secret.from_name(NAME)` reads locally.

Kept under MWTUI_HOME (default ~/.config/mwtui) in secrets.json, readable only by you. `list` shows
names and keys, never values; nothing here prints a value.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mwtui.engine.sdk.secret import read_dotenv
from mwtui.engine.store.secrets import SecretStore, SecretStoreError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "secret", help="manage the secrets that modal.Secret.from_name() reads",
        description="Named secrets for modal.Secret.from_name(NAME). Stored under MWTUI_HOME "
        "(default ~/.config/mwtui) in secrets.json, readable only by you. Replicas read them when they "
        "start: restart an endpoint to pick up a change.",
    )
    sub = p.add_subparsers(dest="secret_command", required=True, metavar="{set,list,delete}")
    put = sub.add_parser("set", help="set keys of a secret (creating it): mwtui secret set NAME KEY=VALUE ...")
    put.add_argument("name", metavar="NAME")
    put.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="a value of '-' is read from stdin")
    put.add_argument("--from-dotenv", metavar="FILE", help="also take the keys of a .env file")
    put.add_argument("--from-json", metavar="FILE", help="also take the keys of a JSON object file")
    put.add_argument("--replace", action="store_true", help="drop the keys not given now (default: keep them)")
    ls = sub.add_parser("list", help="secret names and their keys (never values)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    delete = sub.add_parser("delete", help="forget a secret")
    delete.add_argument("name", metavar="NAME")


class _Usage(Exception):
    pass


def _values(args: argparse.Namespace) -> dict[str, str]:
    values: dict[str, str] = {}
    if args.from_dotenv:
        try:
            values.update({k: v for k, v in read_dotenv(args.from_dotenv).items() if v is not None})
        except OSError as e:
            raise _Usage(f"cannot read {args.from_dotenv}: {e.strerror or e}") from None
    if args.from_json:
        try:
            with open(args.from_json, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise _Usage(f"cannot read {args.from_json} as JSON: {e}") from None
        if not isinstance(data, dict):
            raise _Usage(f"{args.from_json} must hold a JSON object of KEY: VALUE")
        values.update({str(k): str(v) for k, v in data.items()})
    for pair in args.pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            # Only the key: never echo the rest, which may be a value typed in the wrong place.
            raise _Usage(f"expected KEY=VALUE, got {key or '=...'!r}")
        values[key] = sys.stdin.read().rstrip("\n") if value == "-" else value
    if not values:
        raise _Usage("give at least one KEY=VALUE (or --from-dotenv / --from-json)")
    return values


def run(args: argparse.Namespace) -> int:
    store = SecretStore()
    try:
        if args.secret_command == "set":
            held = store.set(args.name, _values(args), replace=args.replace)
            print(f"secret {args.name!r} now has {len(held)} key(s): {', '.join(sorted(held))}")
            return 0
        if args.secret_command == "list":
            listing = store.list()
            if args.json:
                print(json.dumps([{"name": n, "keys": keys} for n, keys in listing.items()], indent=2))
                return 0
            if not listing:
                print("no secrets yet (make one with: mwtui secret set NAME KEY=VALUE ...)")
                return 0
            width = max(len(n) for n in listing)
            print(f"{'NAME':<{width}}  KEYS")
            for name, keys in listing.items():
                print(f"{name:<{width}}  {', '.join(keys) or '(none)'}")
            return 0
        if store.delete(args.name):
            print(f"deleted secret {args.name!r}")
            return 0
        print(f"mwtui: no secret {args.name!r} (see `mwtui secret list`)", file=sys.stderr)
        return 1
    except (SecretStoreError, _Usage) as e:
        print(f"mwtui: {e}", file=sys.stderr)
        return 1
