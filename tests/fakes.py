"""Fakes of the ports, shared by the unit tests (each keeps the port's contract)."""

from __future__ import annotations

from services.events.models import Event


class FakePublisher:
    """An EventPublisher that keeps what it was given, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Event]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, topic: str, event: Event) -> None:
        self.sent.append((topic, event))
