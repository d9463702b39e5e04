"""`@modal.fastapi_endpoint` as Modal's container runtime serves it (`magic_fastapi_app`).

A fresh FastAPI app per endpoint, CORS open to every origin with credentials (so Starlette echoes the
Origin), and exactly one route at "/" for the declared method: other paths 404, other methods (HEAD
included) 405. Parameters, serialization and sync-in-threadpool are FastAPI's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FASTAPI_MISSING = (
    "Modal functions decorated with `fastapi_endpoint` require FastAPI to be installed in the modal.Image. "
    'Please update your Image definition code, e.g. with `.pip_install("fastapi[standard]")`.'
)


class FastAPIMissing(Exception):
    pass


def build_fastapi_app(fn: Callable[..., Any], method: str, docs: bool) -> Any:
    try:
        from fastapi import FastAPI
        from fastapi.middleware.cors import CORSMiddleware
    except ImportError as e:
        raise FastAPIMissing(FASTAPI_MISSING) from e
    # Without an OpenAPI URL FastAPI adds none of /docs, /redoc, /openapi.json.
    app = FastAPI(openapi_url="/openapi.json" if docs else None)
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_credentials=True, allow_methods=["*"], allow_headers=["*"]
    )
    app.add_api_route("/", fn, methods=[method])
    return app
