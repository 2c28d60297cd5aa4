"""Dead letters: a record the worker cannot use goes to pipeline.dlq with the reason and where it
came from, and the worker keeps going.

Faust's own answer to a value it cannot decode is a log line and an exception thrown into the
agent's stream; `RejectingTopic` (the app's Topic class, a documented extension point) sends a
`RecordRejected` instead. Agents reject a decodable record that is not an event their topic
carries with `reject`.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import AppT

from services.events import topics
from services.events.models import rejected

STAGE = "worker"


async def reject(app: AppT, message: Any, reason: str) -> None:
    """Send the dead letter of `message` (a Faust Message)."""
    letter = rejected(message, stage=STAGE, reason=reason)
    sink = app.topic(topics.DEAD_LETTERS.name, key_serializer="raw", internal=False)
    await sink.send(key=message.key, value=letter)


async def reject_current(app: AppT, stream: Any, reason: str) -> None:
    """Reject the record an agent's stream is on."""
    await reject(app, stream.current_event.message, reason)


class RejectingTopic(faust.Topic):
    """A topic whose undecodable records become dead letters, not an exception in the agent."""

    async def on_key_decode_error(self, exc: Exception, message: Any) -> None:
        await reject(self.app, message, f"undecodable key: {type(exc).__name__}: {exc}")

    async def on_value_decode_error(self, exc: Exception, message: Any) -> None:
        await reject(self.app, message, f"undecodable value: {type(exc).__name__}: {exc}")
