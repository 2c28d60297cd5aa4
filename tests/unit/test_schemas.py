"""The .avsc files are the source of truth: models match them, and old writers stay readable."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import BaseModel

from schemas import REGISTRY, UnknownSchema
from schemas.registry import HERE, SchemaRegistry, schema_fingerprint
from services.domain import Card, Segment
from services.events.models import EVENT_TYPES, ChunkCreated, ChunkFailed, DocumentProgress, decode, encode
from streams.codec import AvroEventCodec

NESTED = {"Segment": Segment, "Card": Card}


def _model_fields(cls: type) -> list[str]:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("name", sorted(set(EVENT_TYPES) | set(NESTED)))
def test_python_model_fields_match_the_avsc(name: str) -> None:
    cls = EVENT_TYPES.get(name) or NESTED[name]
    avsc = [f["name"] for f in REGISTRY.current[name]["fields"]]
    assert _model_fields(cls) == avsc


def test_every_event_schema_has_a_model_and_the_common_fields() -> None:
    common = ["event_id", "tenant_id", "document_id", "generation", "occurred_at"]
    events = [n for n, s in REGISTRY.current.items() if s["fields"][0]["name"] == "event_id"]
    assert sorted(events) == sorted(EVENT_TYPES)
    for name in events:
        assert [f["name"] for f in REGISTRY.current[name]["fields"][:5]] == common


def test_every_current_schema_is_recorded_in_history() -> None:
    history = REGISTRY.history()
    for name in REGISTRY.names():
        fp = REGISTRY.fingerprint_of(name)
        assert history.get(fp) == name, f"run `python -m schemas freeze` after changing {name}"
        assert (HERE / "history" / f"{name}.{fp.hex()}.avsc").exists()


def _sample(schema: Any, named: dict[str, Any]) -> Any:
    """A datum for any (expanded) schema, to write with an old writer schema."""
    if isinstance(schema, list):
        return None if "null" in schema else _sample(schema[0], named)
    if isinstance(schema, str):
        if schema in named:
            return _sample(named[schema], named)
        return {"string": "x", "int": 1, "long": 2, "double": 0.5, "boolean": True, "null": None}[schema]
    kind = schema["type"]
    if kind == "record":
        named[schema.get("namespace", "") + "." + schema["name"]] = schema
        return {f["name"]: _sample(f["type"], named) for f in schema["fields"]}
    if kind == "array":
        return [_sample(schema["items"], named)]
    if kind == "map":
        return {"key": _sample(schema["values"], named)}
    return _sample(kind, named)


def _written_by(writer: dict[str, Any]) -> bytes:
    """A sample event as that (old) writer schema encoded it, single-object framed."""
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + schema_fingerprint(writer))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), _sample(writer, {}))
    return buf.getvalue()


@pytest.mark.parametrize("path", sorted((HERE / "history").glob("*.avsc")), ids=lambda p: p.name)
def test_every_past_writer_schema_is_still_readable(path: Path) -> None:
    writer = json.loads(path.read_text())
    name, record = REGISTRY.decode(_written_by(writer))
    assert name == writer["name"].rsplit(".", 1)[-1]
    assert set(record) == {f["name"] for f in REGISTRY.current[name]["fields"]}


def test_an_added_optional_field_keeps_old_events_readable(tmp_path: Path) -> None:
    # Simulate the next schema version: CancelDocument gains a field with a default.
    for p in HERE.glob("*.avsc"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "history").mkdir()
    old = SchemaRegistry(tmp_path)
    old.freeze()
    old_bytes = old.encode(
        "CancelDocument",
        {
            "event_id": "e",
            "tenant_id": "t",
            "document_id": "d",
            "generation": 1,
            "occurred_at": 5,
            "reason": None,
        },
    )
    cur = json.loads((tmp_path / "dev.deckstream.events.CancelDocument.avsc").read_text())
    cur["fields"].append({"name": "requested_by", "type": "string", "default": "user"})
    (tmp_path / "dev.deckstream.events.CancelDocument.avsc").write_text(json.dumps(cur))
    new = SchemaRegistry(tmp_path)
    name, record = new.decode(old_bytes)
    assert (name, record["requested_by"], record["document_id"]) == ("CancelDocument", "user", "d")


def test_single_object_encoding_header_and_round_trip() -> None:
    chunk = ChunkCreated(
        tenant_id="t",
        document_id="d",
        generation=2,
        chunk_index=3,
        segments=[Segment(4, "iv", ("Part I", "Ch 1"), "text")],
        tokens=1,
        content_hash="h",
        filename="f.pdf",
        card_types=["basic"],
        cards_per_chunk=4,
    )
    failed = ChunkFailed(**chunk.ids(), chunk_index=3, reason="r", code="c", attempts=3, chunk=chunk)
    data = encode(failed)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == REGISTRY.fingerprint_of("ChunkFailed")
    assert decode(data) == failed
    assert decode(data).chunk.segments[0].section == ("Part I", "Ch 1")  # type: ignore[attr-defined]


def test_garbage_and_unknown_fingerprints_are_refused() -> None:
    with pytest.raises(UnknownSchema, match="single-object"):
        decode(b'{"json": true}')
    with pytest.raises(UnknownSchema, match="fingerprint"):
        decode(b"\xc3\x01" + b"\x00" * 8 + b"\x02")


def test_faust_codec_round_trips_events_and_refuses_other_values() -> None:
    codec = AvroEventCodec()
    p = DocumentProgress(
        tenant_id="t",
        document_id="d",
        generation=1,
        kind="card",
        status="generating",
        filename="f",
        created_at=1,
        pages_total=2,
        pages_done=1,
        chunks_total=1,
        chunks_done=1,
        chunks_failed=0,
        cards=1,
        progress=0.5,
        new_cards=[Card("c", "basic", "Q?", "A", "f", 1, "1", ("S",), 0, "v1")],
    )
    assert codec.loads(codec.dumps(p)) == p
    with pytest.raises(TypeError):
        codec.dumps({"not": "an event"})


@pytest.mark.parametrize(
    ("name", "field", "default"),
    [
        ("ChunkCreated", "lane", "bulk"),
        ("DocumentUploaded", "replay_chunks", []),
        ("DocumentUploaded", "pages_sent", 0),
        ("DocumentUploaded", "chunks_sent", 0),
        ("DocumentProgress", "waiting", None),
        ("CardsGenerated", "dropped_reasons", {}),
    ],
)
def test_events_written_before_a_field_existed_read_with_its_default(
    name: str, field: str, default: object
) -> None:
    old = sorted(
        p
        for p in (HERE / "history").glob(f"{name}.*.avsc")
        if field not in {f["name"] for f in json.loads(p.read_text())["fields"]}
    )
    assert old, f"the {name} schema before {field} is kept in history"
    decoded, record = REGISTRY.decode(_written_by(json.loads(old[0].read_text())))
    assert decoded == name and record[field] == default


def test_cards_written_before_review_reasons_read_without_one() -> None:
    def card_fields(writer: dict[str, Any]) -> set[str]:
        items = next(f for f in writer["fields"] if f["name"] == "cards")["type"]["items"]
        return {f["name"] for f in items["fields"]}

    writers = [json.loads(p.read_text()) for p in sorted((HERE / "history").glob("CardsGenerated.*.avsc"))]
    old = [w for w in writers if "review" not in card_fields(w)]
    assert old and any("review" in card_fields(w) for w in writers)
    for writer in old:
        name, record = REGISTRY.decode(_written_by(writer))
        assert name == "CardsGenerated" and len(record["cards"]) == 1
        assert record["cards"][0]["review"] is None and record["cards"][0]["needs_review"] is True
