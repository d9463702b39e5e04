"""Moving an app beyond one machine: `mwtui export knative APP` writes Knative documents and container
build contexts for the same app file, with the same knobs (see `bundle` for the layout, `knative` for
the knob mapping, `dockerfile` for the Image chain, `secrets` for what happens to secrets).

Nothing here imports user code: `introspect` and discovery do that in child processes.
"""

from .bundle import ExportError, ExportOptions, ExportResult, export_knative

__all__ = ["ExportError", "ExportOptions", "ExportResult", "export_knative"]
