"""Publishing events to Kafka, behind a Protocol so the API can be tested with a fake."""

from __future__ import annotations

from typing import Protocol

from aiokafka import AIOKafkaProducer

from services.events.models import AccountEvent, Event, encode


class EventPublisher(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def publish(self, topic: str, event: Event) -> None:
        """Returns once the broker has acknowledged the event (acks=all)."""
        ...


class KafkaPublisher:
    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            request_timeout_ms=15000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, event: Event) -> None:
        # Account events are keyed by tenant (services/accounts/log.py): one tenant's stay in order.
        key = event.tenant_id if isinstance(event, AccountEvent) else event.document_id
        await self._producer.send_and_wait(topic, encode(event), key=key.encode())
