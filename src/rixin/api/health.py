"""Liveness and readiness (the reviewed public allowlist: no key) and metrics (admin key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from rixin.api.deps import AdminDep, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(services: ServicesDep) -> Response:
    checks = {
        "database": await services.db.ping(),
        "models": services.models.loaded.is_set(),
        "accepting": not services.edge.draining,
    }
    status = 200 if all(checks.values()) else 503
    return JSONResponse({"status": "ok" if status == 200 else "unavailable", **checks}, status)


@router.get("/metrics")
async def metrics(services: ServicesDep, admin: AdminDep) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")
