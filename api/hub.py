"""One Kafka consumer per API process, fanned out to SSE subscribers in memory.

The hub reads jobs.progress and decks from the beginning without a consumer group (every
partition, no rebalances, no commits) and keeps, per document, the latest snapshot, a bounded
log of its client events and its deck. A document's events share one partition, so
"partition-offset-k" is a total order for that document and a valid SSE Last-Event-ID.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.events import topics
from services.events.models import DeckAssembled, DocumentProgress, decode

log = structlog.get_logger(__name__)
LOG_LIMIT = 20_000  # client events kept per document for replay
QUEUE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}-{self.offset}"


@dataclass(slots=True)
class DocumentView:
    snapshot: DocumentProgress
    events: deque[tuple[Position, DocumentProgress]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    deck: DeckAssembled | None = None
    card_ids: set[str] = field(default_factory=set)  # cards already streamed
    subscribers: set[asyncio.Queue[tuple[Position, DocumentProgress] | None]] = field(default_factory=set)


class ProgressHub:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.docs: dict[str, DocumentView] = {}
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
        self._task = asyncio.create_task(self._run(), name="progress-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()
        for view in self.docs.values():
            for q in view.subscribers:
                q.put_nowait(None)

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
                self.apply(message.topic, Position(message.partition, message.offset), message.value)
                tp = TopicPartition(message.topic, message.partition)
                if tp in self._targets and message.offset + 1 >= self._targets[tp]:
                    del self._targets[tp]
                    if not self._targets:
                        self._caught_up.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("progress hub stopped")
            raise

    def apply(self, topic: str, pos: Position, value: bytes) -> None:
        try:
            event = decode(value)
        except Exception:
            log.warning("undecodable event", topic=topic, partition=pos.partition, offset=pos.offset)
            return
        if isinstance(event, DeckAssembled):
            view = self.docs.get(event.document_id)
            if view is not None and event.generation >= view.snapshot.generation:
                view.deck = event
            return
        if not isinstance(event, DocumentProgress):
            return
        view = self.docs.get(event.document_id)
        if view is None:
            view = self.docs[event.document_id] = DocumentView(snapshot=event)
        elif event.generation < view.snapshot.generation:
            return
        if event.kind == "card" and event.new_cards:
            # Cards re-sent after a worker crash are left out: the client has them already. (An
            # event can carry several chunks' cards, some new and some re-sent.)
            fresh = [c for c in event.new_cards if c.card_id not in view.card_ids]
            if not fresh:
                return
            if len(fresh) < len(event.new_cards):
                event = event.model_copy(update={"new_cards": fresh})
            view.card_ids.update(c.card_id for c in fresh)
        view.snapshot = event
        view.events.append((pos, event))
        for q in list(view.subscribers):
            if q.full():  # a reader that cannot keep up is closed; it resumes with Last-Event-ID
                view.subscribers.discard(q)
                q.get_nowait()
                q.put_nowait(None)
                continue
            q.put_nowait((pos, event))

    def register_upload(self, snapshot: DocumentProgress) -> None:
        """Show a just-accepted upload before the pipeline reports on it."""
        self.docs.setdefault(snapshot.document_id, DocumentView(snapshot=snapshot))

    def subscribers(self) -> int:
        return sum(len(v.subscribers) for v in self.docs.values())

    def subscribe(self, document_id: str) -> asyncio.Queue[tuple[Position, DocumentProgress] | None]:
        q: asyncio.Queue[tuple[Position, DocumentProgress] | None] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.docs[document_id].subscribers.add(q)
        return q

    def unsubscribe(
        self, document_id: str, q: asyncio.Queue[tuple[Position, DocumentProgress] | None]
    ) -> None:
        view = self.docs.get(document_id)
        if view is not None:
            view.subscribers.discard(q)
