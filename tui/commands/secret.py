"""`mwtui secret set|list|delete|export`: the named secrets that `modal.Secret.from_name(NAME)` reads
locally.

Kept under MWTUI_HOME (default ~/.config/mwtui) in secrets.json, readable only by you. `list` shows
names and keys, never values. Only `export` prints values, for a pipe: the `kubectl create secret
generic NAME --from-env-file=<(mwtui secret export NAME)` line that `mwtui export knative` prints, or
`--format manifest | kubectl apply -f -`. It will not print them to a terminal unless told to.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from typing import Any

from mwtui.engine.sdk.secret import read_dotenv
from mwtui.engine.store.secrets import SecretStore, SecretStoreError
from mwtui.tui.cli_values import k8s_name, k8s_namespace
from mwtui.tui.terminal_text import printable


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "secret", help="manage the secrets that modal.Secret.from_name() reads",
        description="Named secrets for modal.Secret.from_name(NAME). Stored under MWTUI_HOME "
        "(default ~/.config/mwtui) in secrets.json, readable only by you. Replicas read them when they "
        "start: restart an endpoint to pick up a change.",
    )
    sub = p.add_subparsers(dest="secret_command", required=True, metavar="{set,list,delete,export}")
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
    export = sub.add_parser(
        "export", help="print a secret for kubectl: KEY=VALUE lines (--from-env-file) or a Secret manifest",
        description="Print secret NAME for kubectl, to a pipe. The default format is what "
        "`kubectl create secret generic K8S_NAME --from-env-file=<(mwtui secret export NAME)` reads (the line "
        "`mwtui export knative` prints): KEY=VALUE lines, values verbatim, quotes included. That format "
        "cannot carry a line break in a value; `--format manifest` can: "
        "`mwtui secret export NAME --format manifest | kubectl apply -f -`.",
    )
    export.add_argument("name", metavar="NAME")
    export.add_argument("--format", choices=("env", "manifest"), default="env",
                        help="env: KEY=VALUE lines for --from-env-file (default); manifest: a Secret as JSON")
    export.add_argument("--k8s-name", type=k8s_name, metavar="NAME",
                        help="the Secret's name in the manifest (default: the name `mwtui export knative` uses)")
    export.add_argument("-n", "--namespace", type=k8s_namespace, help="the Secret's namespace in the manifest")
    export.add_argument("--show", action="store_true", help="print even to a terminal (values on screen)")


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


# What kubectl accepts (k8s.io/apimachinery validation): IsEnvVarName for --from-env-file keys, and
# IsConfigMapKey for the keys of a Secret's data.
_ENV_KEY = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_MAX_ENV_LINE = 64 * 1024 - 1  # kubectl reads the file with a bufio.Scanner: 64 KiB a line, newline included
# Printed instead when the export fails in a pipe: `--from-env-file=<(...)` ignores the exporter's exit
# status, and would make an empty Secret of an empty file. kubectl refuses this line (not a valid key).
_POISON = "mwtui-secret-export-failed (see the error above)\n"


def _env_file(name: str, values: dict[str, str]) -> str:
    """`KEY=VALUE` lines, as kubectl's --from-env-file reads them: everything after the first `=`
    verbatim (quotes, `#`, spaces), one line each, so no line break and no trailing CR in a value."""
    lines = []
    fix = f"use a manifest instead: mwtui secret export {name} --format manifest | kubectl apply -f -"
    for key in sorted(values):
        value = values[key]
        if not _ENV_KEY.fullmatch(key):
            raise _Usage(f"secret {name!r}: key {key!r} is not a name kubectl accepts in an env file "
                         "(letters, digits, '_', '-', '.', not starting with a digit)")
        if "\n" in value or value.endswith("\r"):
            raise _Usage(f"secret {name!r}: the value of {key} has a line break, which kubectl's "
                         f"--from-env-file cannot carry; {fix}")
        line = f"{key}={value}"
        if len(line.encode()) > _MAX_ENV_LINE:
            raise _Usage(f"secret {name!r}: the value of {key} is longer than kubectl reads in an env file "
                         f"line (64 KiB); {fix}")
        lines.append(line + "\n")
    return "".join(lines)


def _manifest(name: str, values: dict[str, str], k8s_name: str, namespace: str | None) -> str:
    for key in values:
        if not _SECRET_KEY.fullmatch(key):
            raise _Usage(f"secret {name!r}: key {key!r} is not a key a Kubernetes Secret can hold "
                         "(letters, digits, '_', '-', '.')")
    metadata: dict[str, str] = {"name": k8s_name}
    if namespace:
        metadata["namespace"] = namespace
    data = {k: base64.b64encode(values[k].encode()).decode() for k in sorted(values)}
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": data}
    return json.dumps(doc, indent=2) + "\n"


def _export(store: SecretStore, args: argparse.Namespace) -> int:
    from mwtui.engine.export.secrets import k8s_name as default_k8s_name

    to_terminal = sys.stdout.isatty()
    try:
        if to_terminal and not args.show:
            raise _Usage("not printing secret values to a terminal: pipe it (as `mwtui export knative` "
                         "prints) or redirect it, or add --show")
        values = store.get(args.name)
        if values is None:
            listing = store.list()
            known = f"known secrets: {', '.join(map(printable, listing))}" if listing else "there are no secrets yet"
            raise _Usage(f"no secret {args.name!r}; {known} (make it with: mwtui secret set {args.name} KEY=VALUE)")
        if args.format == "manifest":
            text = _manifest(args.name, values, args.k8s_name or default_k8s_name(args.name), args.namespace)
        else:
            text = _env_file(args.name, values)
    except (SecretStoreError, _Usage):
        if args.format == "env" and not to_terminal:
            sys.stdout.write(_POISON)
        raise
    sys.stdout.write(text)
    return 0


def run(args: argparse.Namespace) -> int:
    store = SecretStore()
    try:
        if args.secret_command == "export":
            return _export(store, args)
        if args.secret_command == "set":
            held = store.set(args.name, _values(args), replace=args.replace)
            keys = ", ".join(printable(k) for k in sorted(held))  # some may come from a hand-edited file
            print(f"secret {args.name!r} now has {len(held)} key(s): {keys}")
            return 0
        if args.secret_command == "list":
            listing = store.list()
            if args.json:
                print(json.dumps([{"name": n, "keys": keys} for n, keys in listing.items()], indent=2))
                return 0
            if not listing:
                print("no secrets yet (make one with: mwtui secret set NAME KEY=VALUE ...)")
                return 0
            # secrets.json may have been edited by hand: what it holds is printed escaped.
            width = max(len(printable(n)) for n in listing)
            print(f"{'NAME':<{width}}  KEYS")
            for name, keys in listing.items():
                print(f"{printable(name):<{width}}  {', '.join(map(printable, keys)) or '(none)'}")
            return 0
        if store.delete(args.name):
            print(f"deleted secret {args.name!r}")
            return 0
        print(f"mwtui: no secret {args.name!r} (see `mwtui secret list`)", file=sys.stderr)
        return 1
    except (SecretStoreError, _Usage) as e:
        print(f"mwtui: {e}", file=sys.stderr)
        return 1
