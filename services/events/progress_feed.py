"""One Kafka consumer per API process that keeps the document views up to date.

It reads jobs.progress, decks, the uploads (documents.uploaded: each document's generations) and
documents.generations (the one served) from the beginning without a consumer group (every partition,
no rebalances, no commits) and applies each record to `DocumentViews`; the accounts topic's
tenants and keys go to the `KeyStore` the API checks keys against (a new or revoked key counts
within a fetch); people's card edits (cards.edits) go to the views, and their reviews
(cards.reviews) to the `ReviewStore` their study schedules are replayed from. It also counts
the dead letters of pipeline.dlq by source topic (shown on /readyz), and sends one for a record
of its own topics it cannot decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.accounts.store import KeyStore
from services.cards.study import ReviewStore
from services.documents.views import DocumentViews, Position
from services.events import topics
from services.events.models import AccountEvent, CardReviewed, RecordRejected, decode, rejected

log = structlog.get_logger(__name__)
STAGE = "api"
# Topics the API reads but a worker's stage owns: that stage sends their dead letters.
READ_ONLY = frozenset({topics.UPLOADED.name})
Reject = Callable[[RecordRejected], Awaitable[None]]


class ProgressFeed:
    def __init__(
        self,
        bootstrap: str,
        views: DocumentViews | None = None,
        reject: Reject | None = None,
        accounts: KeyStore | None = None,
        reviews: ReviewStore | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.views = views if views is not None else DocumentViews()
        self.accounts = accounts if accounts is not None else KeyStore()
        self.reviews = reviews if reviews is not None else ReviewStore()
        self.reject = reject  # sends a dead letter (the API's publisher); None: log only
        self._dead: dict[str, set[tuple[int, int]]] = {}  # source topic -> (partition, offset)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._targets: dict[TopicPartition, int] = {}
        self.error: str | None = None

    async def start(self) -> None:
        # Subscribed without a group: aiokafka assigns every partition, no rebalances, no commits.
        self._consumer = AIOKafkaConsumer(
            topics.PROGRESS.name,
            topics.DECKS.name,
            topics.UPLOADED.name,
            topics.GENERATIONS.name,
            topics.DEAD_LETTERS.name,
            topics.ACCOUNTS.name,
            topics.EDITS.name,
            topics.REVIEWS.name,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=topics.FETCH_MAX_WAIT_MS,
            max_poll_records=500,
        )
        await self._consumer.start()
        try:
            tps = list(self._consumer.assignment())
            if not tps:
                raise RuntimeError(
                    f"topics {topics.PROGRESS.name}, {topics.DECKS.name} not found on {self.bootstrap}"
                )
            ends = await self._consumer.end_offsets(tps)
            self._targets = {tp: off for tp, off in ends.items() if off > 0}
        except BaseException:
            await self._consumer.stop()
            self._consumer = None
            raise
        if not self._targets:
            self._caught_up.set()
        self._task = asyncio.create_task(self._run(), name="progress-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()
        self.views.close()

    @property
    def ready(self) -> bool:
        return self._caught_up.is_set() and self._task is not None and not self._task.done()

    async def wait_caught_up(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        assert self._consumer is not None
        try:
            async for message in self._consumer:
                await self.take(message)
                tp = TopicPartition(message.topic, message.partition)
                if tp in self._targets and message.offset + 1 >= self._targets[tp]:
                    del self._targets[tp]
                    if not self._targets:
                        self._caught_up.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("progress feed stopped")
            raise

    async def take(self, message: Any) -> None:
        """One record (an aiokafka ConsumerRecord): applied, counted, or sent to the dead letters."""
        try:
            self.apply(message.topic, Position(message.partition, message.offset), message.value)
        except Exception as exc:
            if message.topic in READ_ONLY:  # the worker's stage reads it too, and reports it
                log.warning("undecodable record left out", topic=message.topic, offset=message.offset)
                return
            letter = rejected(message, stage=STAGE, reason=f"undecodable value: {type(exc).__name__}: {exc}")
            if self.reject is not None:
                await self.reject(letter)

    def apply(self, topic: str, pos: Position, value: bytes) -> None:
        """Apply one record; raises for one that cannot be decoded."""
        event = decode(value)
        if isinstance(event, RecordRejected):
            self._dead.setdefault(event.source_topic, set()).add((event.partition, event.offset))
            return
        if isinstance(event, AccountEvent):
            self.accounts.apply(event)
            return
        if isinstance(event, CardReviewed):
            self.reviews.apply(event)
            return
        self.views.apply(pos, event)

    def dead_letters(self) -> dict[str, int]:
        """Records rejected so far, by the topic they came from."""
        return {topic: len(where) for topic, where in sorted(self._dead.items())}
