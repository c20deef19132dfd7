"""``GET /metrics``: the Prometheus text exposition of the app's metric families."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=True, summary="Prometheus metrics",
            operation_id="metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {
                "schema": {"type": "string"}}},
                "description": "Prometheus text exposition format (version 0.0.4)."}})
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
