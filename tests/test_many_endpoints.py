"""An app with a hundred endpoints: every replica starts at once, through one zygote, and all come up."""

from __future__ import annotations

from pathlib import Path

from .conftest import start_serve, stop_serve

ENDPOINTS = 100
ENDPOINT = """
@app.function()
@modal.fastapi_endpoint()
def e{i}():
    return {{"endpoint": {i}}}
"""


def test_a_hundred_endpoints_all_come_up(tmp_path: Path) -> None:
    app = tmp_path / "many.py"
    app.write_text('import modal\n\napp = modal.App("many")\n' + "".join(ENDPOINT.format(i=i) for i in range(ENDPOINTS)))
    served = start_serve(app, "--no-reload", env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        rows = served.wait_status(f"all {ENDPOINTS} running", lambda rows: len(rows) == ENDPOINTS and all(
            r["state"] == "running" for r in rows.values()), timeout=90)
        assert all(r["replicas"]["ready"] == 1 for r in rows.values())
        for i in (0, ENDPOINTS // 2, ENDPOINTS - 1):
            assert served.get(f"many-e{i}").json() == {"endpoint": i}
    finally:
        assert stop_serve(served) == 0
