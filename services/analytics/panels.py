"""Dashboard panels: the Grafana dashboards in dashboards/*.json are the one source of every
chart's SQL. The API runs the same SQL for its analytics page, with Grafana's macros expanded
here for a time range, so a panel that works on the page works in Grafana and the other way.

Each panel carries `deckstream: {key, kind}`: the key the page asks for and how it draws it
(timeseries: a `time` column then numeric series; bar: a label then numbers; table).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


@dataclass(frozen=True, slots=True)
class Panel:
    key: str
    title: str
    kind: str  # timeseries, bar, table
    description: str
    sql: str  # with Grafana's macros and ${database}


def _walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _walk(p.get("panels", []))  # rows hold panels


def load_panels(folder: Path = DASHBOARDS) -> list[Panel]:
    """Every panel of every dashboard, in dashboard and display order."""
    found = []
    for path in sorted(folder.glob("*.json")):
        for p in _walk(json.loads(path.read_text())["panels"]):
            meta, targets = p.get("deckstream"), p.get("targets") or []
            if not meta or not targets:
                continue
            found.append(
                Panel(meta["key"], p["title"], meta["kind"], p.get("description", ""), targets[0]["rawSql"])
            )
    return found


def step_s(from_ms: int, to_ms: int, points: int = 60) -> int:
    """Grafana-like interval: about `points` buckets over the range, in round seconds."""
    raw = max(1, (to_ms - from_ms) // 1000 // points)
    for nice in (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400):
        if raw <= nice:
            return nice
    return raw


def expand(sql: str, *, database: str, from_ms: int, to_ms: int) -> str:
    """The SQL with ${database} and the Grafana ClickHouse macros this project uses filled in."""
    # Whole seconds, as Grafana's macros have them: the end rounded up, or the last second's
    # events (times carry milliseconds) would fall outside the range.
    f, t, step = from_ms // 1000, -(-to_ms // 1000), step_s(from_ms, to_ms)
    funcs = {
        "timeFilter": lambda c: f"{c} >= toDateTime({f}) AND {c} <= toDateTime({t})",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {step} second)",
    }
    consts = {"fromTime": f"toDateTime({f})", "toTime": f"toDateTime({t})", "interval_s": str(step)}

    def sub(m: re.Match[str]) -> str:
        name, arg = m.groups()
        if arg is not None and name in funcs:
            return funcs[name](arg.strip())
        if arg is None and name in consts:
            return consts[name]
        raise ValueError(f"macro {m.group(0)} is not supported")

    if not re.fullmatch(r"\w+", database):
        raise ValueError(f"bad database name {database!r}")
    return _MACRO.sub(sub, sql.replace("${database}", database))


def plain(value: Any) -> Any:
    """A cell as JSON: times as milliseconds since the epoch (UTC)."""
    if isinstance(value, datetime):  # chDB answers naive datetimes in UTC
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    return value
