"""Schema evolution, judged by the Apache Avro reference implementation (schemas/compat.py)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import avro.errors
import avro.io
import avro.schema
import pytest

from schemas.__main__ import main
from schemas.compat import NO_READER, Problem, check, check_pair
from schemas.registry import HERE, SchemaRegistry

CANCEL = "dev.deckstream.events.CancelDocument.avsc"


def _copy_with(tmp_path: Path, file: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """The repo's schemas and history in tmp_path, with one current schema changed."""
    shutil.copytree(HERE / "history", tmp_path / "history")
    for p in HERE.glob("*.avsc"):
        shutil.copy(p, tmp_path / p.name)
    schema = json.loads((tmp_path / file).read_text())
    change(schema)
    (tmp_path / file).write_text(json.dumps(schema))
    return tmp_path


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_the_current_schemas_read_every_past_writer_schema_and_back() -> None:
    report = check()
    assert [str(p) for p in report.problems] == []
    assert report.ok
    # every past writer that is not the current schema itself was checked, both ways
    past = len(list((HERE / "history").glob("*.avsc"))) - len(SchemaRegistry().current)
    assert report.pairs == {"backward": past, "forward": past} and past > 0


def test_the_cli_check_passes_on_the_repo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert "backward (required)" in capsys.readouterr().out


def test_a_field_added_without_a_default_is_reported_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy_with(
        tmp_path, CANCEL, lambda s: s["fields"].append({"name": "requested_by", "type": "string"})
    )
    report = check(folder)
    problem = _only(report.of("backward"))
    assert (problem.name, problem.reader) == ("CancelDocument", "current")
    assert problem.writer.startswith("history/CancelDocument.")
    assert problem.incompatibility.field == "requested_by"
    assert problem.incompatibility.kind == "reader_field_missing_default_value"
    assert not report.ok
    assert report.of("forward") == []  # an old reader just skips the new field

    assert main(["check"], folder) == 1
    assert "requested_by" in capsys.readouterr().out


def test_the_reported_incompatibility_is_real_for_avro_io(tmp_path: Path) -> None:
    old = json.loads((HERE / CANCEL).read_text())
    new = json.loads((HERE / CANCEL).read_text())
    new["fields"].append({"name": "requested_by", "type": "string"})
    assert [i.field for i in check_pair(new, old)] == ["requested_by"]

    writer, reader = avro.schema.parse(json.dumps(old)), avro.schema.parse(json.dumps(new))
    buf = io.BytesIO()
    datum = {"event_id": "e", "tenant_id": "t", "document_id": "d", "generation": 1, "occurred_at": 5}
    avro.io.DatumWriter(writer).write({**datum, "reason": None}, avro.io.BinaryEncoder(buf))
    with pytest.raises(avro.errors.SchemaResolutionException, match="requested_by"):
        avro.io.DatumReader(writer, reader).read(avro.io.BinaryDecoder(io.BytesIO(buf.getvalue())))
    # with a default the same bytes read, and the check agrees
    _field(new, "requested_by")["default"] = "user"
    assert check_pair(new, old) == []
    reader = avro.schema.parse(json.dumps(new))
    record = avro.io.DatumReader(writer, reader).read(avro.io.BinaryDecoder(io.BytesIO(buf.getvalue())))
    assert isinstance(record, dict) and record["requested_by"] == "user"


def test_a_changed_field_type_is_reported_by_name(tmp_path: Path) -> None:
    folder = _copy_with(tmp_path, CANCEL, lambda s: _field(s, "generation").update(type="string"))
    problem = _only(check(folder).of("backward"))
    assert problem.incompatibility.field == "generation"
    assert problem.incompatibility.kind == "type_mismatch"
    assert "string" in problem.incompatibility.detail and "int" in problem.incompatibility.detail


def test_a_nested_record_change_names_the_path_in_every_event_that_carries_it(tmp_path: Path) -> None:
    folder = _copy_with(
        tmp_path,
        "dev.deckstream.events.Card.avsc",
        lambda s: s["fields"].append({"name": "difficulty", "type": "int"}),
    )
    found = {(p.name, p.incompatibility.field) for p in check(folder).of("backward")}
    assert ("Card", "difficulty") in found
    assert ("CardsGenerated", "cards[].difficulty") in found
    assert {field for _, field in found} <= {"difficulty", "cards[].difficulty", "new_cards[].difficulty"}


def test_a_dropped_required_field_breaks_only_forward_which_is_advisory(tmp_path: Path) -> None:
    def drop(s: dict[str, Any]) -> None:
        s["fields"] = [f for f in s["fields"] if f["name"] != "document_id"]

    report = check(_copy_with(tmp_path, CANCEL, drop))
    assert report.of("backward") == [] and report.ok
    problem = _only(report.of("forward"))
    assert problem.writer == "current"
    assert problem.reader.startswith("history/CancelDocument.")
    assert problem.incompatibility.field == "document_id"


def test_records_of_an_event_type_with_no_current_schema_are_reported(tmp_path: Path) -> None:
    folder = _copy_with(tmp_path, CANCEL, lambda s: None)
    (folder / CANCEL).unlink()
    problem = _only(check(folder).of("backward"))
    assert (problem.name, problem.incompatibility.kind) == ("CancelDocument", NO_READER)
