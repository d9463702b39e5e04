"""The one-line header: app, file, gateway, endpoint count, total requests/s, reload status."""

from __future__ import annotations

import os

from mwtui.engine.facade import ReloadStatus, Snapshot
from rich.text import Text
from textual.widgets import Static


def reload_text(r: ReloadStatus | None) -> Text:
    if r is None or not r.enabled or r.state == "off":
        return Text("reload: off", style="grey70")
    if r.state == "reloading":
        return Text("reload: reloading…", style="yellow")
    if r.state == "error":
        return Text("reload: error ✖", style="bold red")
    gen = f" (gen {r.generation})" if r.generation > 1 else ""
    return Text(f"reload: watching ✓{gen}", style="green")


def header_text(snap: Snapshot | None, file: str, status: str | None = None) -> Text:
    out = Text(" mwtui ", style="bold reverse")
    out.append("  ")
    if snap is None:
        out.append(os.path.basename(file), style="bold")
        out.append(f" · {status or 'starting…'}")
        return out
    out.append(snap.app_name, style="bold")
    out.append(f" ({os.path.basename(snap.file)})")
    out.append(f" · gateway {snap.gateway_url}")
    n = len(snap.endpoints)
    running = sum(1 for e in snap.endpoints if e.state == "running")
    out.append(f" · {n} endpoint{'s' if n != 1 else ''}")
    if running != n:
        out.append(f" ({running} running)", style="yellow")
    out.append(f" · {snap.total_rps:.1f} req/s")
    out.append(" · ")
    out.append_text(reload_text(getattr(snap, "reload", None)))
    if status:
        out.append(f" · {status}", style="bold yellow")
    return out


class AppHeader(Static):
    def show(self, snap: Snapshot | None, file: str, status: str | None = None) -> None:
        self.update(header_text(snap, file, status))
