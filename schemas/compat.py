"""Schema evolution check with the Apache Avro reference implementation (the ``avro`` package).

The codec (``schemas.registry``) uses fastavro for speed; this module only judges schema pairs,
with ``avro.compatibility.ReaderWriterCompatibilityChecker`` (the Python port of Java Avro's
``SchemaCompatibility``): a reader schema is compatible with a writer schema when it can read
every datum the writer can write (Avro spec, "Schema Resolution").

Directions, for every record name:

* backward (required): the current schema reads what every writer schema in ``history/`` wrote.
  Kafka keeps old records and consumers re-read them (replays, restarts from old offsets), so a
  schema change that breaks this breaks the pipeline; ``python -m schemas check`` fails on it.
* forward (advisory): every past schema reads what the current one writes, i.e. an older build
  could read newer records. The registry refuses records whose writer fingerprint it has never
  seen, so an older build cannot read newer records today whatever the schemas say; this only
  matters if writer schemas are ever shared at runtime (a registry server), hence a note only.

The checker gives one verdict per pair; to name the field at fault it is asked again field by
field, down through records, arrays and maps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    check_schema_names,
    lookup_writer_field,
)

from schemas.registry import HERE, SchemaRegistry, schema_fingerprint

Direction = Literal["backward", "forward"]
NO_READER = "no_reader_schema"


@dataclass(frozen=True)
class Incompatibility:
    """The reader schema cannot read some datum the writer schema can write."""

    field: str  # dotted path; ``[]`` = array items, ``{}`` = map values; "" = the record itself
    kind: str  # avro's SchemaIncompatibilityType value, e.g. reader_field_missing_default_value
    detail: str

    def __str__(self) -> str:
        where = f"field {self.field!r}" if self.field else "the record"
        return f"{where}: {self.kind} ({self.detail})"


@dataclass(frozen=True)
class Problem:
    direction: Direction
    name: str  # short record name, e.g. CardsGenerated
    reader: str  # where the reader schema comes from: "current" or "history/<file>"
    writer: str
    incompatibility: Incompatibility

    def __str__(self) -> str:
        reads = f"{self.name} {self.reader} cannot read {self.writer}"
        return f"{self.direction}: {reads}: {self.incompatibility}"


@dataclass(frozen=True)
class Report:
    pairs: Mapping[Direction, int]  # reader/writer pairs checked
    problems: tuple[Problem, ...]

    def of(self, direction: Direction) -> list[Problem]:
        return [p for p in self.problems if p.direction == direction]

    @property
    def ok(self) -> bool:
        """Backward compatibility is what we require; forward problems are notes."""
        return not self.of("backward")


def _parse(schema: Mapping[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(schema))


def _verdict(reader: avro.schema.Schema, writer: avro.schema.Schema) -> SchemaCompatibilityResult:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # memoizes per pair: one per question
    return checker.get_compatibility(reader, writer)


def _incompatible(result: SchemaCompatibilityResult) -> bool:
    return result.compatibility is SchemaCompatibilityType.incompatible


def _describe(result: SchemaCompatibilityResult) -> tuple[str, str]:
    kinds = sorted({k.value for k in result.incompatibilities})
    detail = "; ".join(sorted(result.messages))
    where = sorted(loc for loc in result.locations if loc != "/")
    if where:
        detail += f" at {', '.join(where)}"
    return ", ".join(kinds), detail


def _attribute(
    reader: avro.schema.Schema, writer: avro.schema.Schema, path: str
) -> Iterator[Incompatibility]:
    """The fields at fault in an incompatible pair: the checker's verdict, asked again one level down."""
    if isinstance(reader, avro.schema.RecordSchema) and isinstance(writer, avro.schema.RecordSchema):
        found = _incompatible(check_schema_names(reader, writer, []))
        if found:
            names = f"reader {reader.fullname}, writer {writer.fullname}"
            yield Incompatibility(path, "name_mismatch", names)
        for field in reader.fields:
            sub = f"{path}.{field.name}" if path else field.name
            written = lookup_writer_field(writer_schema=writer, reader_field=field)
            if written is None:
                if not field.has_default:
                    found = True
                    yield Incompatibility(
                        sub,
                        "reader_field_missing_default_value",
                        f"the writer has no field {field.name!r} and the reader gives no default",
                    )
            elif _incompatible(_verdict(field.type, written.type)):
                found = True
                yield from _attribute(field.type, written.type, sub)
        if found:
            return
    elif isinstance(reader, avro.schema.ArraySchema) and isinstance(writer, avro.schema.ArraySchema):
        yield from _attribute(reader.items, writer.items, f"{path}[]")
        return
    elif isinstance(reader, avro.schema.MapSchema) and isinstance(writer, avro.schema.MapSchema):
        yield from _attribute(reader.values, writer.values, f"{path}{{}}")
        return
    kind, detail = _describe(_verdict(reader, writer))
    yield Incompatibility(path, kind, detail)


def check_pair(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> list[Incompatibility]:
    """Why ``reader`` cannot read all that ``writer`` writes (expanded JSON schemas); [] = compatible."""
    r, w = _parse(reader), _parse(writer)
    if not _incompatible(_verdict(r, w)):
        return []
    found = list(_attribute(r, w, ""))
    if not found:  # never leave an incompatible verdict unexplained
        kind, detail = _describe(_verdict(r, w))
        found = [Incompatibility("", kind, detail)]
    return found


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def check(folder: Path = HERE, *, forward: bool = True) -> Report:
    """Every current schema against every past writer schema of the same record name."""
    current = SchemaRegistry(folder).current
    pairs: dict[Direction, int] = {"backward": 0, "forward": 0}
    problems: list[Problem] = []
    for path in sorted((folder / "history").glob("*.avsc")):
        past: dict[str, Any] = json.loads(path.read_text())
        name, where = _short(past["name"]), f"history/{path.name}"
        reader = current.get(name)
        if reader is None:
            problems.append(
                Problem(
                    "backward",
                    name,
                    "current",
                    where,
                    Incompatibility("", NO_READER, f"no current schema named {name} reads these records"),
                )
            )
            continue
        if schema_fingerprint(past) == schema_fingerprint(reader):
            continue  # the current schema itself
        pairs["backward"] += 1
        problems += [Problem("backward", name, "current", where, i) for i in check_pair(reader, past)]
        if forward:
            pairs["forward"] += 1
            problems += [Problem("forward", name, where, "current", i) for i in check_pair(past, reader)]
    return Report(pairs, tuple(problems))
