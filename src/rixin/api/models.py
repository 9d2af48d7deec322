"""``/v1/models``: what this deployment serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.errors import NotFound
from rixin.services.models import ServedModel

router = APIRouter(prefix="/v1", tags=["models"])


def _model(served: ServedModel) -> dict[str, Any]:
    return {
        "id": served.id,
        "object": "model",
        "created": served.created,
        "owned_by": served.config.owned_by,
        # --- rixin extension ---
        "rixin": {
            "kind": served.kind,
            "ready": served.router is not None,
            "error": served.error,
            "capabilities": served.capabilities.as_dict(),
        },
    }


@router.get("/models")
async def list_models(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(m) for m in services.models.all()]}


@router.get("/models/{model_id:path}")
async def retrieve_model(
    model_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    served = services.models.find(model_id)
    if served is None:
        raise NotFound(
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return _model(served)
