"""The Faust codec for our events: Avro single-object encoding (services.events.models)."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from services.events.models import Event, decode, encode

CODEC = "deckstream-avro"


class AvroEventCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, Event):
            raise TypeError(f"not an event: {type(obj).__name__}")
        return encode(obj)

    def _loads(self, s: bytes) -> Any:
        return decode(s)


codecs.register(CODEC, AvroEventCodec())
