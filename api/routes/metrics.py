"""Prometheus metrics of this API process (services/metrics.py); no token, like /healthz."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import PartsDep
from services.bootstrap import ApiParts
from services.metrics import Lag, LagSource, ProcessMetrics, api_metrics

router = APIRouter(tags=["metrics"])


def _analytics_lag(parts: ApiParts) -> Lag:
    sink = parts.analytics.sink if parts.analytics is not None else None
    return sink.lag() if sink is not None else {}


def _metrics(request: Request, parts: ApiParts) -> ProcessMetrics:
    """This app's registry, made at the first scrape from the parts of the running lifespan."""
    made: tuple[ApiParts, ProcessMetrics] | None = getattr(request.app.state, "metrics", None)
    if made is None or made[0] is not parts:
        sink = LagSource("analytics-sink", lambda: _analytics_lag(parts))
        made = request.app.state.metrics = (parts, api_metrics(parts.feed, sink))
    return made[1]


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, parts: PartsDep) -> Response:
    """Read on the event loop, where the views and the consumers change: no lock needed."""
    return Response(_metrics(request, parts).exposition(), media_type=CONTENT_TYPE_LATEST)
