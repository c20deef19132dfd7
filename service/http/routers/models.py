"""Served models: names, tasks, labels, input conventions, default options, weights origin,
precision tiers with their measured deltas."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.http.deps import get_backend, get_registry
from service.http.schemas import ErrorResponse, ModelInfo, ModelList
from service.runtime.backends.base import Backend
from service.runtime.registry import ModelRegistry

router = APIRouter(prefix="/v1/models", tags=["models"])


def _info(registry: ModelRegistry, backend: Backend, name: str) -> ModelInfo:
    meta = registry.get(name)
    return ModelInfo.from_metadata(meta, is_default=registry.defaults.get(meta.task) == name,
                                   backend=backend.name,
                                   providers=backend.providers().get(name, []),
                                   tiers=registry.tiers(name))


@router.get("", response_model=ModelList, summary="List served models", operation_id="list_models")
async def list_models(registry: ModelRegistry = Depends(get_registry),
                      backend: Backend = Depends(get_backend)) -> ModelList:
    """Every served model with its description."""
    return ModelList(models=[_info(registry, backend, n) for n in registry.models])


@router.get(
    "/{name}", response_model=ModelInfo, summary="Describe one model", operation_id="get_model",
    responses={404: {"model": ErrorResponse, "description": "The model is not served (the "
                     "message lists the served ones)."}},
)
async def get_model(name: str, registry: ModelRegistry = Depends(get_registry),
                    backend: Backend = Depends(get_backend)) -> ModelInfo:
    """One model's description; 404 when not served."""
    return _info(registry, backend, name)
