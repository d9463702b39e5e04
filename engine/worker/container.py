"""A container view for one replica (Linux): its own mount namespace, set up before any user code runs.

Every `add_local_file` / `add_local_dir` of the pool's image appears at its container path, read-only
(so a write there never reaches the user's files), and every volume, network file system and cloud
bucket appears at its mount path, bound read-write to its folder under $MWTUI_HOME (so every replica sees
writes live). The rest of the file system is the host's, unchanged (home, the venv, /tmp, the app).

How, without creating anything on the host outside the temp folder: the new root is a tmpfs on a fresh
temp folder; each entry of the host's `/` is bound into it (top-level symlinks such as /bin -> usr/bin
are recreated as symlinks), so missing mount points such as /assets are made in the tmpfs. A path whose
folder exists on the host but lacks it (/root/app.py) "shadows" that folder the same way: a tmpfs over it
in the view, holding binds of its host entries. Then pivot_root (chroot where the kernel refuses) into
it, and the temp folder is removed again.

`plan()` is the pure part (no I/O: the host is asked through `Host`); `enter()` carries it out with libc's
`unshare`/`mount`/`umount2` and the `pivot_root` syscall. Root gets a mount namespace; anyone else also
needs a user namespace (their uid mapped to itself). If a step fails, the replica runs in host mode (as
with `--no-container`) and says why in one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

CONTAINER_ENV = "MWTUI_CONTAINER"  # "0": host mode (`--no-container`)
POOL_PLAN_ENV = "MWTUI_POOL_PLAN"  # same name as sdk.runtime's: not imported, to keep this module light
ENABLE_HINT = ("run mwtui as root, or allow unprivileged user namespaces "
               "(sysctl kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_unprivileged_userns=0)")

# --- the plan (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """One path of the container: `path` shows `source` (a host path)."""

    path: str  # absolute, normalized
    source: str
    writable: bool  # a volume; else image files (read-only)
    is_dir: bool
    what: str = ""  # for a person


@dataclass(frozen=True)
class Op:
    """One step, with `path` a path of the view (the executor puts the new root in front of it)."""

    kind: str  # "tmpfs" | "mkdir" | "touch" | "symlink" | "bind"
    path: str
    source: str = ""  # bind: host path; symlink: the link's text
    readonly: bool = False


class Host(Protocol):
    def kind(self, path: str) -> str | None:
        """"dir", "link", "file" (anything else) or None (absent), without following a last symlink."""

    def entries(self, path: str) -> list[str]: ...

    def readlink(self, path: str) -> str: ...


# Never shadowed: their entries are the kernel's (one per process in /proc), and a copy would be wrong.
KERNEL_TREES = ("/proc", "/sys", "/dev")


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def _ancestors(path: str) -> list[str]:
    """Strict ancestors, shallowest first: /a/b/c -> ["/", "/a", "/a/b"]."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts))]


def _shadow(host: Host, folder: str) -> list[Op]:
    """`folder` as a tmpfs holding the host's entries (bound, symlinks copied): new names can be made in
    it without touching the host, and everything already there is the host's own."""
    ops = [] if folder == "/" else [Op("tmpfs", folder)]
    for name in sorted(host.entries(folder)):
        p = _join(folder, name)
        k = host.kind(p)
        if k == "link":
            ops.append(Op("symlink", p, host.readlink(p)))
        elif k is not None:
            ops += [Op("mkdir" if k == "dir" else "touch", p), Op("bind", p, p)]
    return ops


def plan(wants: list[Want], host: Host) -> tuple[list[Op], list[str]]:
    """The steps that make the view (the new root is a tmpfs already), and for a person what cannot be
    given (such a path is left out; the rest still is)."""
    problems: list[str] = []
    chosen: list[tuple[Want, str, bool]] = []  # want, deepest existing folder, path exists on host
    paths = {w.path for w in wants}
    for w in sorted(wants, key=lambda w: w.path):
        label = f"{w.what + ' at ' if w.what else ''}{w.path}"
        if w.path == "/" or any(a in paths for a in _ancestors(w.path)[1:]):
            problems.append(f"{label}: a container path inside another one is not supported")
            continue
        if in_kernel_tree(w.path):
            problems.append(f"{label}: paths under {', '.join(KERNEL_TREES)} are the kernel's, not the image's")
            continue
        if host.kind(w.source) is None and not w.writable:  # a volume's folder is made by `enter`
            problems.append(f"{label}: its source {w.source} does not exist")
            continue
        deepest, ok = "/", True
        for a in _ancestors(w.path)[1:]:
            k = host.kind(a)
            if k is None:
                break
            if k != "dir":
                problems.append(f"{label}: {a} is a {'symlink' if k == 'link' else 'file'} on this machine")
                ok = False
                break
            deepest = a
        if not ok:
            continue
        here = host.kind(w.path) if deepest == _ancestors(w.path)[-1] else None
        if here is not None and (here == "link" or (here == "dir") != w.is_dir):
            problems.append(f"{label}: the machine has a {'symlink' if here == 'link' else here} there")
            continue
        chosen.append((w, deepest, here is not None))
    ops = _shadow(host, "/")
    shadows = sorted({deepest for _, deepest, exists in chosen if not exists and deepest != "/"},
                     key=lambda p: p.count("/"))
    for folder in shadows:
        ops += _shadow(host, folder)
    for w, deepest, exists in chosen:
        if not exists:
            missing = [a for a in _ancestors(w.path) if len(a) > len(deepest)]
            ops += [Op("mkdir", a) for a in missing]
            ops.append(Op("mkdir" if w.is_dir else "touch", w.path))
        ops.append(Op("bind", w.path, w.source, readonly=not w.writable))
    return ops, problems


def wants_from_plan(pool_plan: dict[str, Any], is_dir: Callable[[str], bool]) -> list[Want]:
    """The container paths of a pool's plan (see `sdk.environment.plan`): mounts with an env var are
    volumes (read-write), the others `add_local_*` files (read-only)."""
    out: list[Want] = []
    for m in pool_plan.get("mounts") or []:
        # A relative path (copy_local_*'s default ".") is relative to the image's workdir, /root on Modal.
        path = os.path.normpath(os.path.join("/root", str(m["path"])))
        writable = bool(m.get("env_var"))
        out.append(Want(path, str(m["target"]), writable, writable or is_dir(str(m["target"])),
                        str(m.get("what") or "")))
    return out


# --- carrying it out ---------------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# statvfs f_flag bits -> mount flags a read-only remount must keep (a user namespace may not drop them)
_KEEP = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
         (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))


class RealHost:
    def kind(self, path: str) -> str | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        import stat

        return "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"

    def entries(self, path: str) -> list[str]:
        return os.listdir(path)

    def readlink(self, path: str) -> str:
        return os.readlink(path)


def _enc(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


class Libc:
    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self._check(self.libc.unshare(ctypes.c_int(flags)), "unshare")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        rc = self.libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data))
        self._check(rc, f"mount {source or ''} on {target}")

    def umount2(self, target: str, flags: int) -> None:
        self._check(self.libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")

    def prctl(self, option: int, arg: int) -> None:
        self._check(self.libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), "prctl")

    def pivot_root(self, new: str, old: str) -> None:
        nr = SYS_PIVOT_ROOT.get(platform.machine())
        if nr is None:
            raise OSError(0, f"pivot_root: unknown syscall number on {platform.machine()}")
        self._check(self.libc.syscall(ctypes.c_long(nr), os.fsencode(new), os.fsencode(old)), "pivot_root")


def own_user_namespace(libc: Libc, flags: int) -> None:
    """unshare a user namespace with `flags` (more namespaces, which it then owns)."""
    uid, gid = os.getuid(), os.getgid()
    libc.unshare(CLONE_NEWUSER | flags)
    # Our own ids map to themselves, so files keep their owners; setgroups must be denied first.
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def _apply(libc: Libc, root: str, op: Op) -> None:
    dst = root + op.path
    if op.kind == "tmpfs":
        libc.mount("tmpfs", dst, "tmpfs", 0, "mode=0755")
    elif op.kind == "mkdir":
        os.makedirs(dst, exist_ok=True)
    elif op.kind == "touch":
        if not os.path.lexists(dst):
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
    elif op.kind == "symlink":
        os.symlink(op.source, dst)
    elif op.kind == "bind":
        libc.mount(op.source, dst, None, MS_BIND | MS_REC)
        if op.readonly:
            kept = os.statvfs(dst).f_flag
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | sum(ms for st, ms in _KEEP if kept & st)
            libc.mount(None, dst, None, flags)


def enter(wants: list[Want], host: Host | None = None) -> list[str]:
    """Move this process into its container view. Raises OSError (the process then still sees the host
    as it is); returns what could not be given."""
    libc = Libc()
    if os.geteuid() == 0:
        libc.unshare(CLONE_NEWNS)
    else:
        own_user_namespace(libc, CLONE_NEWNS)
    # Nothing we mount may reach the host's namespace (or come back from it).
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    for w in wants:
        if w.writable:
            os.makedirs(w.source, exist_ok=True)  # a volume's folder, under $MWTUI_HOME
    ops, problems = plan(wants, host or RealHost())
    cwd = os.getcwd()
    root = tempfile.mkdtemp(prefix="mwtui-root-")
    try:
        libc.mount("tmpfs", root, "tmpfs", 0, "mode=0755")
        for op in ops:
            _apply(libc, root, op)
        _switch_root(libc, root)
    except BaseException:
        with contextlib.suppress(OSError):
            libc.umount2(root, MNT_DETACH)
        with contextlib.suppress(OSError):
            os.rmdir(root)
        raise
    # The temp folder shows in the view too (through /tmp, with a copy of the root's mount): remove it.
    with contextlib.suppress(OSError):
        libc.umount2(root, MNT_DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(root)
    os.chdir(cwd)
    return problems


def _switch_root(libc: Libc, root: str) -> None:
    os.chdir(root)
    old = ".mwtui-old-root"
    os.mkdir(old)
    try:
        libc.pivot_root(".", old)
    except OSError:  # e.g. already in a chroot: the old root then stays mounted, unreachable
        os.rmdir(old)
        os.chroot(".")
        os.chdir("/")
        return
    os.chdir("/")
    libc.umount2("/" + old, MNT_DETACH)
    os.rmdir("/" + old)


def in_kernel_tree(path: str) -> bool:
    return any(path == k or path.startswith(k + "/") for k in KERNEL_TREES)


def expected(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Will replicas started from here get a container view? For discovery's warnings: a guess from the
    kernel's settings, without trying (a replica that fails says so)."""
    return mode(environ)[0] == "container"


def mode(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, str]:
    """("container", "") or ("host", why): what replicas started from here are expected to run in, for
    the screen's header and /api/app. Read from the kernel's settings, without trying."""
    if environ.get(CONTAINER_ENV) == "0":
        return "host", "--no-container"
    if not sys.platform.startswith("linux"):
        return "host", f"mount namespaces are Linux's; this is {sys.platform}"
    if os.geteuid() == 0:
        return "container", ""
    refusing = {"/proc/sys/user/max_user_namespaces": "0", "/proc/sys/kernel/unprivileged_userns_clone": "0",
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1"}
    for path, value in refusing.items():
        with contextlib.suppress(OSError), open(path) as f:
            if f.read().strip() == value:
                return "host", f"unprivileged user namespaces are off ({path} is {value}); to enable: {ENABLE_HINT}"
    return "container", ""


# --- the replica's entry ----------------------------------------------------------------------------


def setup_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Before the app is imported: give this replica its container view from its pool's plan, or say
    why it runs in host mode. Returns "container", "host" or "" (nothing to mount)."""
    raw = environ.get(POOL_PLAN_ENV)
    if not raw or not sys.platform.startswith("linux"):
        return ""
    try:
        wants = wants_from_plan(json.loads(raw), os.path.isdir)
    except (ValueError, KeyError, TypeError):
        return ""  # worker.pool says the plan is unreadable
    if not wants:
        return ""
    if environ.get(CONTAINER_ENV) == "0":
        print("mwtui: host mode (--no-container): container paths are symlinks where allowed, "
              "else $MWTUI_VOLUME_*", file=sys.stderr)
        return "host"
    try:
        problems = enter(wants)
    except OSError as exc:
        print(f"mwtui: host mode: cannot give this replica its own container view ({exc.strerror or exc}); "
              f"to enable it, {ENABLE_HINT}", file=sys.stderr)
        return "host"
    for p in problems:
        print(f"mwtui: container view: {p}", file=sys.stderr)
    return "container"
