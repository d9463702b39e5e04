"""`mwtui token create|list|revoke`: the proxy-auth tokens that `requires_proxy_auth=True` endpoints want.

The secret is printed once, by `create`; mwtui keeps only its hash, so `list` cannot show it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mwtui.engine.ports import DEFAULT_GATEWAY_PORT
from mwtui.engine.tokens import SECRET_PREFIX, TokenFileError, TokenInfo, TokenStore
from mwtui.tui.cli_values import token_name
from mwtui.tui.terminal_text import printable


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "token", help="manage proxy-auth tokens (Modal-Key / Modal-Secret)",
        description="Tokens for endpoints with requires_proxy_auth=True. Stored under MWTUI_HOME "
        "(default ~/.config/mwtui) in tokens.json, readable only by you, secrets hashed.",
    )
    sub = p.add_subparsers(dest="token_command", required=True, metavar="{create,list,revoke}")
    create = sub.add_parser("create", help="make a token; prints its Modal-Key and Modal-Secret once")
    create.add_argument("--name", type=token_name, default="",
                        help="a note to tell tokens apart in `mwtui token list`: letters, digits, spaces, '.', '-', '_'")
    create.add_argument("--json", action="store_true", help='print {"key": ..., "secret": ...}')
    ls = sub.add_parser("list", help="the tokens there are (never their secrets)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = sub.add_parser("revoke", help="delete a token; a running gateway refuses it within a second")
    revoke.add_argument("key", metavar="KEY", help="the token's Modal-Key (wk-...)")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "?"


def _info_json(info: TokenInfo) -> dict[str, Any]:
    return {"key": info.key, "name": info.name, "created": info.created}


def run(args: argparse.Namespace) -> int:
    store = TokenStore()
    try:
        if args.token_command == "create":
            info, secret = store.create(args.name)
            if args.json:
                print(json.dumps({**_info_json(info), "secret": secret}))
                return 0
            print(f"Modal-Key:    {info.key}")
            print(f"Modal-Secret: {secret}")
            print()
            print("Copy the secret now: mwtui keeps only a hash of it and cannot show it again.")
            print("Send both headers to an endpoint with requires_proxy_auth=True, for example:")
            print(f'  curl -H "Modal-Key: {info.key}" -H "Modal-Secret: {secret}" '
                  f"http://<label>.localhost:{DEFAULT_GATEWAY_PORT}/")
            return 0
        if args.token_command == "list":
            tokens = store.list()
            if args.json:
                print(json.dumps([_info_json(t) for t in tokens], indent=2))
                return 0
            if not tokens:
                print("no tokens yet (make one with: mwtui token create --name NAME)")
                return 0
            # tokens.json may have been edited by hand: what it holds is printed escaped.
            width = max(len(printable(t.key)) for t in tokens)
            print(f"{'KEY':<{width}}  {'CREATED':<16}  NAME")
            for t in tokens:
                print(f"{printable(t.key):<{width}}  {_when(t.created):<16}  {printable(t.name)}")
            return 0
        if args.key.startswith(SECRET_PREFIX):
            # Never echo what looks like a secret back onto the screen or into a log.
            print("mwtui: that is a Modal-Secret (ws-...); revoke takes the Modal-Key (wk-...)", file=sys.stderr)
            return 1
        if store.revoke(args.key):
            print(f"revoked {printable(args.key)}")
            return 0
        print(f"mwtui: no token {args.key!r} (see `mwtui token list`)", file=sys.stderr)
        return 1
    except TokenFileError as e:
        print(f"mwtui: {e}", file=sys.stderr)
        return 1
