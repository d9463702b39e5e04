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

from . import report

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


class _View:
    """The view as the wants placed so far make it, answering for view paths from host paths: under a
    placed want its source's, under a merged one (see `plan`) its source's names over the host's."""

    def __init__(self, host: Host, placed: list[tuple[Want, frozenset[str] | None]]) -> None:
        self.host = host
        self.placed = sorted(placed, key=lambda p: -len(p[0].path))  # deepest first

    def where(self, path: str) -> tuple[str, bool]:
        """The host path that shows at `path`, and whether it is read-only there (image files)."""
        for w, merged in self.placed:
            if path != w.path and not path.startswith(w.path.rstrip("/") + "/"):
                continue
            rest = path[len(w.path):]
            if merged is not None and (not rest or rest.lstrip("/").split("/")[0] not in merged):
                continue  # the host's own entry (or a shallower want's), not the source's
            return w.source + rest, not w.writable
        return path, False

    def kind(self, path: str) -> str | None:
        return self.host.kind(self.where(path)[0])

    def entries(self, path: str) -> list[str]:
        merged = [m for w, m in self.placed if w.path == path and m is not None]
        names = set(self.host.entries(self.where(path)[0]))
        return sorted(names | set(merged[0])) if merged else sorted(names)

    def readlink(self, path: str) -> str:
        return self.host.readlink(self.where(path)[0])


def _shadow(view: _View, folder: str) -> list[Op]:
    """`folder` as a tmpfs holding what the view has there (bound, symlinks copied): new names can be
    made in it without touching the host, and everything already there stays as it was."""
    ops = [] if folder == "/" else [Op("tmpfs", folder)]
    for name in view.entries(folder):
        p = _join(folder, name)
        k = view.kind(p)
        if k == "link":
            ops.append(Op("symlink", p, view.readlink(p)))
        elif k is not None:
            source, readonly = view.where(p)
            ops += [Op("mkdir" if k == "dir" else "touch", p), Op("bind", p, source, readonly=readonly)]
    return ops


def _covers(path: str, keep: list[str]) -> list[str]:
    """The kept host paths at or below `path`."""
    return [k for k in keep if k == path or k.startswith(path.rstrip("/") + "/")]


def plan(wants: list[Want], host: Host, keep: list[str] | None = None) -> tuple[list[Op], list[str]]:
    """The steps that make the view (the new root is a tmpfs already), and for a person what cannot be
    given (such a path is left out; the rest still is).

    A path inside another one (a volume in an image folder) is placed once the outer one is: in rounds,
    outermost first. A want that would hide a `keep` path (this Python, the app's folder, the temp
    folder) is merged instead: the folder keeps the host's entries, the source's names are bound over
    them, and the entries on the way to a kept path stay the host's."""
    problems: list[str] = []
    keep = [os.path.normpath(k) for k in keep or []]
    valid: list[Want] = []
    for w in sorted(wants, key=lambda w: w.path):
        label = _label(w)
        if w.path == "/":
            problems.append(f"{label}: the root of the file system cannot be replaced")
        elif in_kernel_tree(w.path):
            problems.append(f"{label}: paths under {', '.join(KERNEL_TREES)} are the kernel's, not the image's")
        elif host.kind(w.source) is None and not w.writable:  # a volume's folder is made by `enter`
            problems.append(f"{label}: its source {w.source} does not exist")
        elif w.source != w.path:  # a folder at its own path is there already
            valid.append(w)

    def depth(w: Want) -> int:
        return sum(1 for o in valid if w.path.startswith(o.path.rstrip("/") + "/"))

    ops = _shadow(_View(host, []), "/")
    placed: list[tuple[Want, frozenset[str] | None]] = []
    for level in sorted({depth(w) for w in valid}):
        view = _View(host, placed)
        # want, deepest existing folder, how: "missing" (made in a shadow of that folder), "in-volume" (made
        # through a volume's bind), "exists" (bound over) or "merge" (see above)
        chosen: list[tuple[Want, str, str]] = []
        for w in (w for w in valid if depth(w) == level):
            found = _place(w, view, keep, problems)
            if found is not None:
                chosen.append((w, *found))
        shadows = {deepest for _, deepest, how in chosen if how == "missing" and deepest != "/"}
        shadows |= {w.path for w, _, how in chosen if how == "merge"}
        for folder in sorted(shadows, key=lambda p: p.count("/")):
            ops += _shadow(view, folder)
        for w, deepest, how in chosen:
            if how == "merge":
                names = _merge(w, host, keep, view, ops, problems)
                placed.append((w, frozenset(names)))
                continue
            if how in ("missing", "in-volume"):
                missing = [a for a in _ancestors(w.path) if len(a) > len(deepest)]
                ops += [Op("mkdir", a) for a in missing]
                ops.append(Op("mkdir" if w.is_dir else "touch", w.path))
            ops.append(Op("bind", w.path, w.source, readonly=not w.writable))
            placed.append((w, None))
    return ops, problems


def _label(w: Want) -> str:
    return f"{w.what + ' at ' if w.what else ''}{w.path}"


def _place(w: Want, view: _View, keep: list[str], problems: list[str]) -> tuple[str, str] | None:
    """How `w` goes into the view: (deepest existing folder, how), or None (said in `problems`)."""
    label = _label(w)
    deepest = "/"
    for a in _ancestors(w.path)[1:]:
        k = view.kind(a)
        if k is None:
            break
        if k != "dir":
            problems.append(f"{label}: {a} is a {'symlink' if k == 'link' else 'file'} on this machine")
            return None
        deepest = a
    here = view.kind(w.path) if deepest == _ancestors(w.path)[-1] else None
    if here is not None and _covers(w.path, keep):
        if here != "dir" or not w.is_dir:
            problems.append(f"{label}: it would hide {_covers(w.path, keep)[0]}, which mwtui needs")
            return None
        return deepest, "merge"
    if here is not None and (here == "link" or (here == "dir") != w.is_dir):
        problems.append(f"{label}: the machine has a {'symlink' if here == 'link' else here} there")
        return None
    if here is not None:
        return deepest, "exists"
    source, readonly = view.where(deepest)
    if source != deepest and not readonly:
        # Inside a volume (our own folder under $MWTUI_HOME): the mount point is made in it, through
        # its bind, so that the volume's own top level stays live (a shadow would hide new files).
        return deepest, "in-volume"
    return deepest, "missing"


def _merge(w: Want, host: Host, keep: list[str], view: _View, ops: list[Op], problems: list[str]) -> list[str]:
    """Bind the source's entries over the (shadowed) folder; returns the names that are the source's."""
    kept = {k[len(w.path):].lstrip("/").split("/")[0] for k in _covers(w.path, keep)} - {""}
    names: list[str] = []
    for name in sorted(host.entries(w.source)):
        p, src = _join(w.path, name), _join(w.source, name)
        k, there = host.kind(src), view.kind(p)
        if name in kept:
            if src != view.where(p)[0]:
                problems.append(f"{_label(w)}: {p} stays this machine's own (mwtui runs from it)")
            continue
        if k == "link":
            if there is None:
                ops.append(Op("symlink", p, host.readlink(src)))
                names.append(name)
            continue
        if k is None or (there is not None and there != k):
            continue  # a socket or such; or a folder of the machine's where the source has a file
        if there is None:
            ops.append(Op("mkdir" if k == "dir" else "touch", p))
        ops.append(Op("bind", p, src, readonly=not w.writable))
        names.append(name)
    return names


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
    """unshare a user namespace with `flags` (more namespaces, which it then owns). A process cannot
    leave a user namespace, and one whose ids cannot be mapped would leave it owning nothing: so a
    forked child tries first, and an OSError says why before this process has changed at all."""
    uid, gid = os.getuid(), os.getgid()
    _try_in_a_child(lambda: (libc.unshare(CLONE_NEWUSER), _map_ids(uid, gid)))
    libc.unshare(CLONE_NEWUSER | flags)
    _map_ids(uid, gid)


def _map_ids(uid: int, gid: int) -> None:
    # Our own ids map to themselves, so files keep their owners; setgroups must be denied first.
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            raise OSError(exc.errno, f"the user namespace cannot map this user ({name}: {exc.strerror})") from exc


def _try_in_a_child(step: Callable[[], object]) -> None:
    """Run `step` in a forked child; raise its OSError here (its text) if it failed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never returns
        code = 0
        try:
            os.close(r)
            step()
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            with contextlib.suppress(OSError):
                os.write(w, str(exc).encode()[:1000])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        why = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OSError(0, why or "a user namespace could not be made")


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
    ops, problems = plan(wants, host or RealHost(), keep=kept())
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


def kept() -> list[str]:
    """What the replica runs from, which no container path may hide: this Python and its packages,
    mwtui, the app's folder, the temp folder (sockets) and $MWTUI_HOME (volumes, the store)."""
    from ..store.home import mwtui_home

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable), here, os.getcwd(),
             tempfile.gettempdir(), str(mwtui_home())}
    return sorted(os.path.realpath(p) for p in paths if p)


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


def setup_from_env(environ: dict[str, str] | os._Environ[str] = os.environ, quiet: bool | None = None) -> str:
    """Before the app is imported: give this replica its container view from its pool's plan, or say
    why it runs in host mode. Returns "container", "host" or "" (nothing to mount). `quiet`: keep the
    view's problems to ourselves (under mwtui, the default, discovery told them once for every replica)."""
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
    if not (report.READY_FD_ENV in environ if quiet is None else quiet):
        for p in problems:
            print(f"mwtui: container view: {p}", file=sys.stderr)
    return "container"
