"""Read a topic whole, once: every record from its start to its end when asked, no consumer group."""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaConsumer

from services.events.models import Event, decode

log = structlog.get_logger(__name__)


async def read_topic(bootstrap: str, topic: str) -> list[Event]:
    """Every event of `topic` up to its end offsets now; records that cannot be decoded (dead
    letters) are left out. Raises if the topic is missing or the broker does not answer."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = list(consumer.assignment())
        if not partitions:
            raise RuntimeError(f"topic {topic} not found on {bootstrap}")
        ends = await consumer.end_offsets(partitions)
        events: list[Event] = []
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000)).items():
                for record in records:
                    try:
                        events.append(decode(record.value))
                    except Exception:
                        log.warning("undecodable record left out", topic=topic, offset=record.offset)
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return events
    finally:
        await consumer.stop()
