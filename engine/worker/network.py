"""A network of its own for a replica whose server listens on a fixed port (`@modal.web_server(port)`), Linux.

The replica leaves the host's network namespace for a new one with loopback up, so its port is its own:
eight replicas may each listen on 8000, beside a host process on 8000. Two bridges join it to the host:
- in: the gateway connects to a Unix socket (file-system sockets cross network namespaces), and a relay
  thread of the replica connects each such connection to 127.0.0.1:PORT inside (`forward.Forwarder`);
- out: pasta (Debian package `passt`) joins the namespace and gives it the host's addresses and routes,
  so any network the host reaches is reached. The TCP and UDP ports that listen on the host's loopback
  when the replica starts (the gateway's among them; not the replica's own ports) are forwarded in, so
  `localhost:PORT` means there what it means on the host.

Order matters: pasta must run in the host's namespaces, so a helper is forked before any `unshare` (the
container view's included); once the namespace exists the helper execs pasta, which dies with the
replica (PR_SET_PDEATHSIG, kept because pasta's user id never changes: `--runas` is our own).

The parsing of /proc/net tables and pasta's command line are pure; the rest is `Network`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable

from . import container

NETWORK_ENV = "MWTUI_OWN_NETWORK"  # "8000,8001": this replica gets a network of its own; its fixed ports
PASTA = "pasta"
TUN = "/dev/net/tun"
INSTALL_HINT = "install pasta (Debian, Ubuntu: apt install passt; Fedora: dnf install passt)"
MAX_FORWARDED = 200  # host ports forwarded in; pasta takes a list, and a dev machine has a few dozen
READY_TIMEOUT_S = 3.0

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"

# --- pure ---------------------------------------------------------------------------------------------


def _local_address(hex_addr: str) -> bool:
    """Is this /proc/net address (hex, as the kernel prints it) the wildcard or a loopback address?"""
    if len(hex_addr) == 8:  # IPv4, host byte order (little-endian): 127.0.0.1 is 0100007F
        return hex_addr == "00000000" or hex_addr[6:8] == "7F"
    if len(hex_addr) == 32:
        words = [hex_addr[i : i + 8] for i in range(0, 32, 8)]
        if hex_addr == "0" * 32 or words == ["00000000", "00000000", "00000000", "01000000"]:
            return True  # :: or ::1
        return words[:3] == ["00000000", "00000000", "FFFF0000"] and words[3][6:8] == "7F"  # ::ffff:127.x
    return False


def listening_ports(table: str, state: str) -> set[int]:
    """Ports of the sockets in a /proc/net/{tcp,tcp6,udp,udp6} table in `state` (TCP_LISTEN,
    UDP_UNCONNECTED) on the wildcard or a loopback address: what `localhost:PORT` reaches on the host."""
    ports: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != state:
            continue
        addr, _, port = fields[1].partition(":")
        if port and _local_address(addr.upper()):
            ports.add(int(port, 16))
    return ports


def port_spec(ports: Iterable[int]) -> str:
    """pasta's form of a port list: "none", or "80,8470" (lowest first, at most MAX_FORWARDED)."""
    chosen = sorted(set(ports))[:MAX_FORWARDED]
    return ",".join(str(p) for p in chosen) if chosen else "none"


def pasta_argv(tcp: Iterable[int], udp: Iterable[int], netns: str, userns: str | None, uid: int) -> list[str]:
    """pasta in the foreground, quiet, configuring the namespace's interface from the host's; nothing
    forwarded from the host into it (the gateway uses the Unix socket), the given host ports out of it."""
    argv = [PASTA, "--foreground", "--quiet", "--config-net", "-t", "none", "-u", "none",
            "-T", port_spec(tcp), "-U", port_spec(udp), "--runas", str(uid), "--netns", netns]
    return argv + (["--userns", userns] if userns else ["--netns-only"])


def wanted_ports(environ: dict[str, str] | os._Environ[str]) -> tuple[int, ...] | None:
    """The replica's fixed ports when it is to get a network of its own, else None."""
    raw = environ.get(NETWORK_ENV)
    if not raw:
        return None
    try:
        return tuple(int(p) for p in raw.split(",") if p)
    except ValueError:
        return None


# --- what the engine expects ------------------------------------------------------------------------


def mode(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, str]:
    """("own", "") when web_server replicas will get a network of their own, else ("host", why and how
    to enable it). Read from the settings, without trying (a replica that fails says so)."""
    kind, why = container.mode(environ)
    if kind != "container":
        return "host", why
    if shutil.which(PASTA) is None:
        return "host", f"pasta is not installed; to give each web_server replica a network of its own, {INSTALL_HINT}"
    if os.geteuid() != 0 and not os.access(TUN, os.R_OK | os.W_OK):
        # pasta makes its tap device in the user namespace through this; most systems leave it 0666.
        return "host", f"{TUN} is not open to this user, so pasta cannot connect a network; to enable it: chmod 0666 {TUN}"
    return "own", ""


# --- the replica's side -------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _listening(state: str, *tables: str) -> set[int]:
    return set().union(*(listening_ports(_read(f"/proc/self/net/{t}"), state) for t in tables))


def _has_default_route() -> bool:
    return any(line.split()[1:2] == ["00000000"] for line in _read("/proc/self/net/route").splitlines()[1:])


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _user_ns() -> int:
    return os.stat("/proc/self/ns/user").st_ino


class Network:
    """Made before the replica's first `unshare` (`prepare`), entered after the container view (`enter`)."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        # What `localhost` reaches on the host now; the replica's own ports stay its own.
        self.tcp = _listening(TCP_LISTEN, "tcp", "tcp6") - set(ports)
        self.udp = _listening(UDP_UNCONNECTED, "udp", "udp6") - set(ports)
        self.routed = _has_default_route()
        self.user_ns = _user_ns()
        self.helper = 0
        self.inside = False  # in its own namespace (whether pasta connected it or not)
        self._go = -1

    def prepare(self) -> None:
        """Fork the helper that will become pasta, while this process is still in the host's namespaces."""
        if shutil.which(PASTA) is None:
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            os.close(w)
            self._helper(r, os.getppid())
        os.close(r)
        self.helper, self._go = pid, w

    def _helper(self, go: int, replica: int) -> None:
        code = 0
        try:
            container.Libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != replica or os.read(go, 1) != b"1":
                os._exit(0)  # the replica is gone, or enters no namespace
            own_user = _user_ns() != os.stat(f"/proc/{replica}/ns/user").st_ino
            fds = {"net": os.open(f"/proc/{replica}/ns/net", os.O_RDONLY)}
            if own_user:
                fds["user"] = os.open(f"/proc/{replica}/ns/user", os.O_RDONLY)
            keep = set(fds.values()) | {0, 1, 2}
            for name in os.listdir("/proc/self/fd"):  # the replica's pipes must not live on in pasta
                if int(name) not in keep:
                    with contextlib.suppress(OSError):
                        os.close(int(name))
            for fd in fds.values():
                os.set_inheritable(fd, True)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; pasta expects defaults
                signal.signal(sig, signal.SIG_DFL)
            user = f"/proc/self/fd/{fds['user']}" if own_user else None
            # A path of our own fd: pasta drops its capabilities before it opens the namespace.
            argv = pasta_argv(self.tcp, self.udp, f"/proc/self/fd/{fds['net']}", user, os.getuid())
            os.execvp(argv[0], argv)
        except BaseException as exc:  # noqa: BLE001 - the helper must never return into the replica
            with contextlib.suppress(Exception):
                print(f"mwtui: cannot start pasta: {exc}", file=sys.stderr, flush=True)
            code = 127
        os._exit(code)

    def enter(self) -> str:
        """Move this process into its own network namespace and wait until pasta connects it. Returns ""
        when all went well, else what went wrong (the replica then goes on as far as it can)."""
        libc = container.Libc()
        try:
            if os.geteuid() != 0 and _user_ns() == self.user_ns:
                container.own_user_namespace(libc, CLONE_NEWNET)
            else:
                libc.unshare(CLONE_NEWNET)
        except OSError as exc:
            self._release(b"0")
            return f"cannot make a network namespace ({exc.strerror or exc}); to enable it, {container.ENABLE_HINT}"
        self.inside = True
        try:
            _loopback_up()
        except OSError as exc:
            self._release(b"0")
            return f"cannot bring up loopback in its network namespace ({exc.strerror or exc})"
        if not self.helper:
            return f"no network beyond its own loopback: {INSTALL_HINT}"
        self._release(b"1")
        return self._wait_ready()

    def _release(self, what: bytes) -> None:
        if self._go < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._go, what)
        os.close(self._go)
        self._go = -1
        if what != b"1" and self.helper:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.helper, 0)
            self.helper = 0

    def _helper_gone(self) -> bool:
        try:
            pid, _ = os.waitpid(self.helper, os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0

    def _wait_ready(self) -> str:
        """pasta is ready once the routes are in and the forwarded host ports listen here."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._helper_gone():
                self.helper = 0
                return "pasta exited at once (its message is above): no network beyond its own loopback"
            routed = _has_default_route() or not self.routed
            forwarded = sorted(self.tcp)[:MAX_FORWARDED]
            if routed and set(forwarded) <= _listening(TCP_LISTEN, "tcp", "tcp6"):
                return ""
            time.sleep(0.002)
        return f"pasta did not connect its network within {READY_TIMEOUT_S:g} s; going on without waiting"


def prepare_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> Network | None:
    """Before any `unshare`: the replica's network, with pasta's helper forked, when it is to get one."""
    ports = wanted_ports(environ)
    if ports is None or not sys.platform.startswith("linux") or environ.get(container.CONTAINER_ENV) == "0":
        return None
    net = Network(ports)
    try:
        net.prepare()
    except OSError as exc:
        print(f"mwtui: cannot start pasta's helper ({exc}); no network beyond its own loopback", file=sys.stderr)
    return net


def enter(net: Network | None) -> bool:
    """After the container view: enter the network made ready by `prepare_from_env`. True when the
    replica has a network of its own (its fixed ports are then reached through Unix sockets)."""
    if net is None:
        return False
    problem = net.enter()
    if problem:
        print(f"mwtui: network of its own: {problem}", file=sys.stderr)
    return net.inside
