"""`modal.Volume`, `NetworkFileSystem` and `CloudBucketMount` as local folders.

A named volume is `$MWTUI_HOME/volumes/<name>` (see `mwtui.engine.store.volumes`), shared live by every
replica: writes are visible at once, so `commit()` and `reload()` have nothing to do. The file API
(`listdir`, `read_file`, `batch_upload`, ...) works on that folder.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import scratch
from .aio import blocking, blocking_gen
from .exception import InvalidError, NotFoundError
from .named import NamedObject


class FileEntryType(enum.IntEnum):
    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3


@dataclass(frozen=True)
class FileEntry:
    path: str
    type: FileEntryType
    mtime: int
    size: int


class _Folder(NamedObject):
    """A named object whose contents are a local folder."""

    KIND = "volume"

    def __init__(self, name: str | None = None, *, folder: str | None = None, **options: Any) -> None:
        super().__init__(name, **options)
        self._folder = folder

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls, **kwargs: Any) -> Iterator[Any]:
        folder = scratch.make(cls.KIND)  # named for this process: swept once it is gone, if it dies here
        try:
            yield cls(None, folder=folder, **kwargs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def local_path(self) -> Path:
        """The local folder that stands in for this object (created on first use)."""
        if self._folder is None:
            from ..store.volumes import folder_for

            self._folder = str(folder_for(self.name or "_", self.KIND))
        return Path(self._folder)

    @property
    def object_id(self) -> str:
        return f"vo-local-{self.name}"

    def _path(self, path: str) -> Path:
        """A path inside the folder; `..` cannot leave it."""
        root = self.local_path.resolve()
        full = (root / path.lstrip("/")).resolve()
        if full != root and root not in full.parents:
            raise InvalidError(f"path {path!r} is outside the {self.KIND}")
        return full

    def _entry(self, p: Path) -> FileEntry:
        st = p.lstat()
        kind = FileEntryType.SYMLINK if p.is_symlink() else (
            FileEntryType.DIRECTORY if p.is_dir() else FileEntryType.FILE)
        return FileEntry(str(p.relative_to(self.local_path.resolve())), kind, int(st.st_mtime), st.st_size)

    @blocking
    def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        return list(self._iter(path, recursive))

    @blocking_gen
    def iterdir(self, path: str = "/", *, recursive: bool = True) -> Iterator[FileEntry]:
        yield from self._iter(path, recursive)

    def _iter(self, path: str, recursive: bool) -> Iterator[FileEntry]:
        base = self._path(path)
        if not base.exists():
            raise NotFoundError(f"No such file or directory: {path}")
        if base.is_file():
            yield self._entry(base)
            return
        for p in sorted(base.rglob("*") if recursive else base.iterdir()):
            yield self._entry(p)

    @blocking_gen
    def read_file(self, path: str) -> Iterator[bytes]:
        full = self._path(path)
        if not full.is_file():
            raise FileNotFoundError(f"No such file: {path}")
        with open(full, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    @blocking
    def read_file_into_fileobj(self, path: str, fileobj: IO[bytes], **kwargs: Any) -> int:
        n = 0
        for chunk in self.read_file(path):
            fileobj.write(chunk)
            n += len(chunk)
        return n

    @blocking
    def remove_file(self, path: str, recursive: bool = False) -> None:
        full = self._path(path)
        if not full.exists():
            raise FileNotFoundError(f"No such file or directory: {path}")
        if full.is_dir():
            if not recursive:
                raise InvalidError(f"{path} is a directory; pass recursive=True")
            shutil.rmtree(full)
        else:
            full.unlink()

    @blocking
    def copy_files(self, src_paths: list[str], dst_path: str, recursive: bool = False) -> None:
        dst = self._path(dst_path)
        for src in src_paths:
            s = self._path(src)
            target = dst / s.name if dst.is_dir() else dst
            if s.is_dir():
                if not recursive:
                    raise InvalidError(f"{src} is a directory; pass recursive=True")
                shutil.copytree(s, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, target)

    @contextlib.contextmanager
    def batch_upload(self, force: bool = False) -> Iterator[_Upload]:
        yield _Upload(self, force)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "local_path": str(self.local_path), "created_at": time.time()}

    def __repr__(self) -> str:
        return f"<modal.{type(self).__name__} {self.name!r} at {self._folder or '(not yet used)'}>"


class _Upload:
    def __init__(self, target: _Folder, force: bool) -> None:
        self._target = target
        self._force = force

    def put_file(self, local_file: str | os.PathLike[str] | IO[bytes], remote_path: str, mode: int | None = None) -> None:
        dst = self._target._path(remote_path)
        if dst.exists() and not self._force:
            raise FileExistsError(f"{remote_path} already exists in the volume (use force=True)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(local_file, "read"):
            dst.write_bytes(local_file.read())  # type: ignore[union-attr]
        else:
            shutil.copyfile(os.fspath(local_file), dst)  # type: ignore[arg-type]
        if mode is not None:
            os.chmod(dst, mode)

    def put_directory(self, local_path: str | os.PathLike[str], remote_path: str, recursive: bool = True) -> None:
        src = Path(local_path)
        for p in src.rglob("*") if recursive else src.iterdir():
            if p.is_file():
                self.put_file(p, f"{remote_path.rstrip('/')}/{p.relative_to(src)}")


class Volume(_Folder):
    KIND = "volume"

    @blocking
    def commit(self) -> None:
        """Nothing to do: every replica reads and writes the same local folder."""

    @blocking
    def reload(self) -> None:
        """Nothing to do: changes from other replicas are already visible."""


class NetworkFileSystem(_Folder):
    KIND = "nfs"

    @blocking
    def write_file(self, remote_path: str, fp: IO[bytes], **kwargs: Any) -> int:
        dst = self._path(remote_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        data = fp.read()
        dst.write_bytes(data)
        return len(data)

    @blocking
    def add_local_file(self, local_path: str | os.PathLike[str], remote_path: str | None = None, **kw: Any) -> None:
        _Upload(self, True).put_file(local_path, remote_path or os.path.basename(os.fspath(local_path)))

    @blocking
    def add_local_dir(self, local_path: str | os.PathLike[str], remote_path: str | None = None, **kw: Any) -> None:
        _Upload(self, True).put_directory(local_path, remote_path or os.path.basename(os.fspath(local_path)))


class CloudBucketMount(_Folder):
    """A bucket cannot be reached without its cloud: an empty local folder per bucket stands in."""

    KIND = "bucket"

    def __init__(self, bucket_name: str, **kwargs: Any) -> None:
        super().__init__(bucket_name)
        self.bucket_name = bucket_name
        self.kwargs = kwargs
