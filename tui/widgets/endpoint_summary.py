"""One line under the table about the selected endpoint: replicas, knobs, restarts, its last error."""

from __future__ import annotations

from mwtui.engine.status import EndpointStatus
from rich.text import Text
from textual.widgets import Static

from . import format as fmt


def summary_text(e: EndpointStatus | None) -> Text:
    if e is None:
        return Text("no endpoint selected", style="grey50")
    s = e.spec
    out = fmt.glyph(e.state)
    out.append(f" {e.name}", style="bold")
    if e.parameters:  # a parametrized class's endpoint: its sets of values have the replicas
        out.append(f" · {e.state} · class parameters {', '.join(e.parameters)} from the query string; "
                   "each set of values gets replicas of its own (the rows named ?...)")
        return out
    out.append(f" · {e.state} · {e.ready}/{e.desired} replica{'s' if e.desired != 1 else ''}")
    if e.starting:
        out.append(f" ({e.starting} starting)")
    out.append(f" · min..max {fmt.range_text(e)} · target {s.target_inputs}, max {s.max_inputs} in flight")
    if e.inflight:
        out.append(f" · {e.inflight} in flight now")
    if e.restarts:
        out.append(f" · {e.restarts} restart{'s' if e.restarts != 1 else ''}", style="yellow")
    if e.last_error and e.state in ("failed", "starting"):
        out.append("\n")
        out.append(fmt.first_line(e.last_error, 200), style="red")
    return out


class EndpointSummary(Static):
    def show(self, e: EndpointStatus | None) -> None:
        self.update(summary_text(e))
