"""Proxy-auth tokens: the store behind `mwtui token create|list|revoke`, and the gateway's check.

A token is Modal's pair: a Modal-Key `wk-…` (its public id) and a Modal-Secret `ws-…`. The file
(`$MWTUI_HOME/tokens.json`, mode 0600, in a 0700 folder) keeps only a salted SHA-256 of each secret.
Secrets are 190 random bits, so a slow password hash would add no safety, only cost: the gateway
checks a request with one SHA-256 of ~40 bytes and a constant-time compare.

Writes go to a temporary file that replaces the old one (readers never see half a file) under an
exclusive lock (two `mwtui token create` at once lose nothing). A running gateway notices a new file
by its inode, mtime and size, looked at no more than every `RECHECK_S`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store.home import mwtui_home, write_private

KEY_PREFIX = "wk-"
SECRET_PREFIX = "ws-"
KEY_CHARS = 22  # ~131 bits: not secret, but unguessable
SECRET_CHARS = 32  # ~190 bits
ALPHABET = string.ascii_letters + string.digits
FILE_NAME = "tokens.json"
RECHECK_S = 0.5  # a running gateway looks at the file at most this often...
MISS_RECHECK_S = 0.05  # ...or this often when a key is unknown (a token created a moment ago)
_DUMMY = hashlib.sha256(b"mwtui").digest()
# A token's name is a note printed by `mwtui token list`: nothing a terminal would act on. \w is a
# letter or digit of any script, or '_'.
NAME_RE = re.compile(r"[\w .-]{0,64}")
NAME_RULE = "at most 64 letters, digits, spaces, '.', '-' or '_'"


class TokenFileError(Exception):
    """The token file cannot be read or written; the message names it."""


@dataclass(frozen=True)
class TokenInfo:
    key: str
    name: str
    created: float  # epoch seconds




def default_path() -> Path:
    return mwtui_home() / FILE_NAME


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8", "replace")).digest()


def _parse(raw: bytes, path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(raw) if raw.strip() else {"tokens": []}
        tokens = data["tokens"]
        if not isinstance(tokens, list):
            raise TypeError("tokens is not a list")
        for t in tokens:
            if not (isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("salt"), str)
                    and isinstance(t.get("sha256"), str)):
                raise TypeError("a token entry lacks key, salt or sha256")
            bytes.fromhex(t["salt"])
            bytes.fromhex(t["sha256"])
        return tokens
    except (ValueError, KeyError, TypeError) as e:
        raise TokenFileError(f"{path} is not a valid mwtui token file ({e}); fix or delete it") from None


class TokenStore:
    """The token file, for the command line (and tests). Every call reads the file afresh."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def _read(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise TokenFileError(f"cannot read {self.path}: {e.strerror or e}") from None
        return _parse(raw, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(folder / (self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise TokenFileError(f"cannot write in {folder}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, tokens: list[dict[str, Any]]) -> None:
        data = json.dumps({"version": 1, "tokens": tokens}, indent=2).encode() + b"\n"
        try:
            write_private(self.path, data)  # 0600 from the first byte, replaced atomically
        except OSError as e:
            raise TokenFileError(f"cannot write {self.path}: {e.strerror or e}") from None

    def create(self, name: str | None = None) -> tuple[TokenInfo, str]:
        """A new token and its secret: the only time the secret exists outside the caller's hands."""
        if name and not NAME_RE.fullmatch(name):
            raise ValueError(f"invalid token name {name!r}: use {NAME_RULE}")
        with self._locked():
            tokens = self._read()
            key = KEY_PREFIX + _random(KEY_CHARS)
            secret = SECRET_PREFIX + _random(SECRET_CHARS)
            salt = secrets.token_bytes(16)
            info = TokenInfo(key, name or "", time.time())
            tokens.append({
                "key": key, "name": info.name, "created": info.created,
                "salt": salt.hex(), "sha256": _digest(salt, secret).hex(),
            })
            self._write(tokens)
        return info, secret

    def list(self) -> list[TokenInfo]:
        """The tokens as the file has them (`_read` refuses a file missing what a token needs); a
        hand-edited `created` that is not a time is shown as unknown rather than a traceback."""
        out = []
        for t in self._read():
            try:
                created = float(t.get("created") or 0)
            except (TypeError, ValueError):
                created = 0.0
            if not 0 <= created < 1e11:  # nan, inf, negative, or past the year 5000
                created = 0.0
            out.append(TokenInfo(str(t["key"]), str(t.get("name") or ""), created))
        return out

    def revoke(self, key: str) -> bool:
        with self._locked():
            tokens = self._read()
            kept = [t for t in tokens if t["key"] != key]
            if len(kept) == len(tokens):
                return False
            self._write(kept)
        return True

    def verify(self, key: str, secret: str) -> bool:
        for t in self._read():
            if hmac.compare_digest(t["key"].encode(), key.encode("utf-8", "replace")):
                return hmac.compare_digest(_digest(bytes.fromhex(t["salt"]), secret), bytes.fromhex(t["sha256"]))
        return False


class TokenCheck:
    """The gateway's check, `check(key, secret) -> bool`, kept current with the file.

    Runs on the gateway's event loop for every request to a `requires_proxy_auth` endpoint, so it
    never blocks on more than an `os.stat` (and a small read when the file changed). A file that
    stops parsing denies everything (fail closed) and says so once on stderr.
    """

    def __init__(self, path: Path | str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.clock = clock
        self._table: dict[str, tuple[bytes, bytes]] = {}
        self._sig: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._complained = False

    def _refresh(self, now: float) -> None:
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._table, self._sig = {}, None
            return
        except OSError as e:
            self._deny(f"cannot read {self.path}: {e.strerror or e}")
            return
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig == self._sig:
            return
        try:
            tokens = _parse(self.path.read_bytes(), self.path)
        except FileNotFoundError:
            self._table, self._sig = {}, None
            return
        except (OSError, TokenFileError) as e:
            self._deny(str(e))
            self._sig = sig
            return
        self._table = {t["key"]: (bytes.fromhex(t["salt"]), bytes.fromhex(t["sha256"])) for t in tokens}
        self._sig = sig
        self._complained = False

    def _deny(self, why: str) -> None:
        self._table = {}
        if not self._complained:
            self._complained = True
            print(f"mwtui gateway: proxy auth refuses every token until this is fixed: {why}", file=sys.stderr)

    def __call__(self, key: str, secret: str) -> bool:
        now = self.clock()
        if now - self._checked >= RECHECK_S:
            self._refresh(now)
        rec = self._table.get(key)
        if rec is None and now - self._checked >= MISS_RECHECK_S:
            self._refresh(now)
            rec = self._table.get(key)
        if rec is None:
            hmac.compare_digest(_DUMMY, _DUMMY)  # about as long as a real check
            return False
        salt, digest = rec
        return hmac.compare_digest(_digest(salt, secret), digest)
