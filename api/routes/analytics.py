"""Analytics: the dashboards' panels for the analytics page, ad-hoc read-only queries and a
rebuild from Kafka (services.analytics.service). 503 while analytics are off or unavailable.
The tables span every tenant (filenames show in some panels): operators only, 403 for a
tenant's key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import OperatorDep, PartsDep
from api.problems import responses
from services.analytics.service import Analytics, AnalyticsUnavailable

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])


def _analytics(parts: Any) -> Analytics:
    if parts.analytics is None:
        raise AnalyticsUnavailable("analytics are off (DECKSTREAM_CLICKHOUSE_ENABLED=false)")
    analytics: Analytics = parts.analytics
    return analytics


class SQL(BaseModel):
    sql: str = Field(min_length=1, max_length=20_000)


@router.get("/panels", responses=responses(401, 403, 503))
async def panels(parts: PartsDep, _: OperatorDep) -> dict[str, Any]:
    """The dashboard panels, in display order."""
    analytics = _analytics(parts)
    listed = [
        {"id": p.key, "title": p.title, "kind": p.kind, "description": p.description}
        for p in analytics.panels.values()
    ]
    return {"panels": listed}


@router.get("/panels/{panel_id}", responses=responses(401, 403, 404, 503))
async def panel(
    panel_id: str,
    parts: PartsDep,
    _: OperatorDep,
    from_ms: Annotated[int | None, Query(ge=0)] = None,
    to_ms: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    """A panel's rows for a time range (default: the last 24 hours); times in ms since the epoch."""
    return await _analytics(parts).panel(panel_id, from_ms, to_ms)


@router.post("/query", responses=responses(400, 401, 403, 503))
async def query(body: SQL, parts: PartsDep, _: OperatorDep) -> dict[str, Any]:
    """Run one read-only SQL statement (`deckstream analytics query`)."""
    result = await _analytics(parts).query(body.sql)
    return {"columns": result.columns, "rows": result.rows}


@router.post("/rebuild", responses=responses(401, 403, 503))
async def rebuild(parts: PartsDep, _: OperatorDep, force: bool = False) -> dict[str, Any]:
    """Rebuild every table from the topics' start (`deckstream analytics rebuild`)."""
    report = await _analytics(parts).rebuild(force=force)
    return report.as_json()
