"""The accounts topic, for those who read it whole once and write to it (the CLI): a key store
rebuilt from the topic, and a publisher that keys each event by its tenant id (one tenant's
events stay ordered in one partition: a key is never seen before its tenant, a revocation
never before its key). The API reads the topic live instead (services/events/progress_feed.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from services.accounts.store import KeyStore
from services.events import topics
from services.events.log_reader import read_topic
from services.events.models import AccountEvent, encode


async def load_key_store(bootstrap: str, default_tenant: str | None) -> KeyStore:
    """Every tenant and key on the accounts topic now. Raises if the topic is missing."""
    store = KeyStore(default_tenant)
    for event in await read_topic(bootstrap, topics.ACCOUNTS.name):
        store.apply(event)
    return store


async def publish_account_events(bootstrap: str, events: Iterable[AccountEvent]) -> None:
    """Publish in order; returns once the broker has them all (acks=all)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        request_timeout_ms=15000,
    )
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topics.ACCOUNTS.name, encode(event), key=event.tenant_id.encode())
    finally:
        await producer.stop()
