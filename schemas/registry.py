"""Avro single-object encoding with the writer schema's fingerprint, without a registry server.

Wire format (Avro spec, "Single object encoding"): ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the binary datum.

Current schemas are ``dev.deckstream.events.<Name>.avsc`` in this folder; every writer schema
ever used stays in ``history/<Name>.<fingerprint>.avsc`` (fully expanded), so old events on
Kafka stay readable: a reader decodes with the writer schema found by fingerprint and resolves
it to the current schema of the same name. ``python -m schemas freeze`` records the
current schemas in history; a test fails if a current schema is missing there.

A topic may carry several event types: the fingerprint says which one a message is.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import expand_schema, fingerprint, load_schema, to_parsing_canonical_form

HERE = Path(__file__).resolve().parent
NAMESPACE = "dev.deckstream.events"
MAGIC = b"\xc3\x01"
HEADER = len(MAGIC) + 8


class UnknownSchema(ValueError):
    """The bytes are not single-object Avro, or were written with a schema we never had."""


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class SchemaRegistry:
    def __init__(self, folder: Path = HERE) -> None:
        self.folder = folder
        self.current: dict[str, dict[str, Any]] = {}  # short name -> expanded schema
        self._parsed: dict[str, Any] = {}
        self._fp: dict[str, bytes] = {}
        self._writers: dict[bytes, tuple[str, Any]] = {}
        for path in sorted(folder.glob(f"{NAMESPACE}.*.avsc")):
            expanded: dict[str, Any] = expand_schema(load_schema(str(path), _write_hint=False))  # type: ignore[assignment]
            name = _short(expanded["name"])
            self.current[name] = expanded
            self._parsed[name] = fastavro.parse_schema(expanded)
            self._fp[name] = schema_fingerprint(expanded)
        for path in sorted((folder / "history").glob("*.avsc")):
            writer = json.loads(path.read_text())
            name = _short(writer["name"])
            self._writers[schema_fingerprint(writer)] = (name, fastavro.parse_schema(writer))
        for name, parsed in self._parsed.items():
            self._writers[self._fp[name]] = (name, parsed)

    def names(self) -> list[str]:
        return sorted(self.current)

    def fingerprint_of(self, name: str) -> bytes:
        return self._fp[name]

    def history(self) -> dict[bytes, str]:
        return {fp: name for fp, (name, _) in self._writers.items()}

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._fp[name])
        fastavro.schemaless_writer(buf, self._parsed[name], record)
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Returns (event name, record resolved to the current schema of that name)."""
        if len(data) < HEADER or data[:2] != MAGIC:
            raise UnknownSchema("not Avro single-object encoding")
        found = self._writers.get(data[2:HEADER])
        if found is None:
            raise UnknownSchema(f"unknown writer schema fingerprint {data[2:HEADER].hex()}")
        name, writer = found
        record = fastavro.schemaless_reader(io.BytesIO(data[HEADER:]), writer, self._parsed[name])
        return name, record  # type: ignore[return-value]  # a record schema reads to a dict

    def freeze(self) -> list[Path]:
        """Write every current schema that history lacks; returns the new files."""
        out = self.folder / "history"
        out.mkdir(exist_ok=True)
        written = []
        for name, schema in self.current.items():
            path = out / f"{name}.{self._fp[name].hex()}.avsc"
            if not path.exists():
                path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
                written.append(path)
        return written


REGISTRY = SchemaRegistry()
