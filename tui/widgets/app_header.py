"""The one-line header: app, file, gateway, endpoint count, total requests/s, reload status. A shorter
wording takes over when the terminal is too narrow for the long one."""

from __future__ import annotations

import os

from mwtui.engine.status import ReloadStatus, Snapshot
from mwtui.engine.version import version
from rich.text import Text
from textual.widgets import Static

from .format import mem as fmt_mem


def reload_text(r: ReloadStatus | None, short: bool = False) -> Text:
    word = "reload" if short else "reload:"
    if r is None or not r.enabled or r.state == "off":
        return Text(f"{word} off", style="grey70")
    if r.state == "reloading":
        return Text(f"{word} …" if short else "reload: reloading…", style="yellow")
    if r.state == "error":
        return Text(f"{word} ✖" if short else "reload: error ✖", style="bold red")
    gen = f" (gen {r.generation})" if r.generation > 1 and not short else ""
    out = Text(f"{word} ✓" if short else f"reload: watching ✓{gen}", style="green")
    if r.ignored:  # files the loop guard silenced: the log says which and why
        out.append(f" {len(r.ignored)} silenced" if short else f", {len(r.ignored)} file(s) silenced", style="yellow")
    return out


def header_text(snap: Snapshot | None, file: str, status: str | None = None, level: int = 0) -> Text:
    """`level` 0 is the long wording; 1 and 2 are shorter, for narrow terminals."""
    short = level > 0
    out = Text.assemble((" mwtui ", "bold reverse"))
    if not short:
        out.append(f" {version()}", style="grey50")
    out.append(" " if short else "  ")
    if snap is None:
        out.append(os.path.basename(file), style="bold")
        out.append(f" · {status or 'starting…'}")
        return out
    base = ", ".join(os.path.basename(f) for _, f in snap.apps) if len(snap.apps) > 1 else os.path.basename(snap.file)
    if short and os.path.splitext(base)[0] == snap.app_name:
        out.append(base, style="bold")  # the file says the app's name too
    else:
        out.append(snap.app_name, style="bold")
        out.append(f" ({base})")
    gateway = f"gateway {snap.gateway_url}"
    if level == 1:
        gateway = snap.gateway_url.replace("http://", "")
    elif level >= 2:
        gateway = ":" + snap.gateway_url.rsplit(":", 1)[-1]
    out.append(f" · {gateway}")
    n = len(snap.endpoints)
    running = sum(1 for e in snap.endpoints if e.state == "running")
    out.append(f" · {n} endpoint{'s' if n != 1 else ''}")
    if running != n:
        out.append(f" ({running} up)" if short else f" ({running} running)", style="yellow")
    out.append(f" · {snap.total_rps:.1f} req/s · ")
    if snap.memory_bytes and level < 2:  # the whole of mwtui: engine, gateway, zygote, replicas (PSS)
        out.append(f"{fmt_mem(snap.memory_bytes)} · ")
    out.append_text(reload_text(snap.reload, short))
    if snap.mode and not short:  # container view or host mode (/api/app says why)
        out.append(" · container view" if snap.mode == "container" else " · host mode",
                   style="" if snap.mode == "container" else "yellow")
        if snap.mode == "container" and snap.network == "host" and any(e.spec.kind == "web_server"
                                                                       for e in snap.endpoints):
            out.append(" (host network)", style="yellow")  # web_server pools: one replica each
    if status:
        # "stopping: draining in-flight requests…" becomes "stopping…" when space is short.
        out.append(f" · {status.split(':')[0] + '…' if short and ':' in status else status}", style="bold yellow")
    return out


class AppHeader(Static):
    def __init__(self, file: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self._args: tuple[Snapshot | None, str, str | None] = (None, file, None)

    def show(self, snap: Snapshot | None, file: str, status: str | None = None) -> None:
        self._args = (snap, file, status)
        self._render_header()

    def _render_header(self) -> None:
        for level in range(3):
            text = header_text(*self._args, level=level)
            if not self.size.width or text.cell_len <= self.size.width:
                break
        self.update(text)

    def on_resize(self) -> None:
        self._render_header()
