"""The values a person types on mwtui's command line, checked where they are typed.

A value that cannot be right stops the command at once with a message naming the flag and the value,
instead of serving on another port (`--port 70000`), turning a timeout off (`--header-timeout nan`) or
waiting for a save of a file that is not there. Flag values are argparse `type=` functions (argparse
prints `mwtui serve: error: argument --port: must be 0-65535, got 70000` and exits 2); the APP argument
is checked by `checked_app` (exit 1, naming the path), since `-m` and `::var` are resolved after parsing.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
from pathlib import Path

from mwtui.engine.loader import MODULE_FLAG, AppRef

# ----------------------------------------------------------------------------- numbers


def _whole(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def port(text: str) -> int:
    """A port to listen on; 0 picks a free one."""
    value = _whole(text)
    if value is None or value > 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text!r}")
    return value


def url_port(text: str) -> int:
    """A port shown in URLs (`mwtui list --port`): a real one, so not 0."""
    value = _whole(text)
    if value is None or not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _whole(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}")
    return value


# ----------------------------------------------------------------------------- names

def token_name(text: str) -> str:
    """A token's note (`mwtui token create --name`): printed in `token list`, so nothing a terminal
    would act on (control characters, escape sequences, direction overrides)."""
    from mwtui.engine.tokens import NAME_RE, NAME_RULE

    if not NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"use {NAME_RULE}; got {text!r}")
    return text


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# A Docker reference's repository prefix: HOST[:PORT], lowercase path components, maybe a final "/".
_REGISTRY = re.compile(
    r"[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*/?"
)


def k8s_namespace(text: str) -> str:
    """Kubernetes' rule for a namespace (a DNS-1123 label); it is also printed in kubectl commands."""
    if not _DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"a Kubernetes namespace is 1-63 lowercase letters, digits or '-', starting and ending with a "
            f"letter or digit; got {text!r}"
        )
    return text


def k8s_name(text: str) -> str:
    """Kubernetes' rule for an object's name (a DNS-1123 subdomain)."""
    if len(text) > 253 or not _DNS_SUBDOMAIN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"a Kubernetes name is at most 253 lowercase letters, digits, '-' or '.', starting and ending "
            f"with a letter or digit; got {text!r}"
        )
    return text


def registry(text: str) -> str:
    """An image registry prefix (ghcr.io/me, localhost:5000): printed in `docker build -t` commands."""
    if not _REGISTRY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an image registry prefix (say ghcr.io/me or localhost:5000): {text!r}")
    return text


def one_line(text: str) -> str:
    """Free text written into a generated file's line (a Dockerfile's RUN): no control characters."""
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be non-empty, one line, no control characters; got {text!r}")
    return text


# ----------------------------------------------------------------------------- paths


def output_folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but must not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path


def checked_app(ref: AppRef) -> AppRef:
    """`ref`, if it can name an app; else exit 1 with a message naming the path. Done before anything
    starts: with reload on, `serve` and the screen would otherwise wait for a save of a file that is
    not there, or of a variable that was mistyped on the command line."""
    problem = app_problem(ref)
    if problem:
        raise SystemExit(f"mwtui: {problem}")
    return ref


def checked_module(target: str) -> AppRef:
    """`-m package.module[::var]`, resolved as `modal serve -m` resolves it (from the working directory);
    else exit 1 with one line naming the module: not found, a bare folder, not a dotted name."""
    try:
        ref = AppRef.parse(f"{MODULE_FLAG}{target}")
    except ModuleNotFoundError as e:
        raise SystemExit(f"mwtui: {e}") from None
    return checked_app(ref)


def app_problem(ref: AppRef) -> str | None:
    path = ref.path
    if not os.path.exists(path):
        return f"no such file: {path}"
    if os.path.isdir(path):
        return f"{path} is a folder; give the Python file that defines the modal.App, e.g. {os.path.join(path, 'app.py')}"
    if not path.endswith(".py"):
        return f"{path} is not a Python file: mwtui runs a Modal app file ending in .py"
    if not os.access(path, os.R_OK):
        return f"cannot read {path}"
    if ref.var is not None:
        if not ref.var.isidentifier():
            return f"`{ref.var}` after `::` is not a variable name (give the modal.App's variable: {path}::app)"
        if not _may_define(path, ref.var):
            return f"{path} has no variable `{ref.var}` (after `::` comes the name of the modal.App's variable)"
    return None


def _may_define(path: str, name: str) -> bool:
    """False only when the file surely binds no global `name`: read, not run (its import is the
    engine's job, in a subprocess). Anything that could bind it some other way counts as a yes: a star
    import, a module `__getattr__`, or the name as a string (`globals()["app"] = ...`). A file that does
    not parse is left to the import, which says where it breaks."""
    try:
        tree = ast.parse(Path(path).read_bytes(), path)
    except (SyntaxError, ValueError, OSError):
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name:
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in (name, "__getattr__"):
            return True
        if isinstance(node, ast.alias) and (node.name == "*" or (node.asname or node.name.partition(".")[0]) == name):
            return True
        if isinstance(node, (ast.Global, ast.Nonlocal)) and name in node.names:
            return True
        if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name == name:
            return True
        if isinstance(node, ast.Constant) and node.value == name:
            return True
    return False
