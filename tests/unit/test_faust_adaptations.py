"""Where the worker departs from Faust's defaults for speed, it keeps Faust's semantics.

- A record is handed to the agents inline; one that has to wait (a full channel) is finished
  in a task that a rebalance (suspend_flow) can abandon, as Faust does.
- Stream iterators give way to other tasks at most every 2 ms instead of before every event.
- Topic buffers get the size build_app asks for (Faust's App.topic drops it).
- A started producer is returned without a pass of the event loop.
- Offsets are never committed past a record an agent is still working on (faust #606).
- During a rebalance, stream partitions start fetching only once it has ended (after Faust's
  recovery last empties the agents' buffers); table changelogs at once.
- Agents learn when the flow stops, so work not yet started need not hold a rebalance up.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import mode
import pytest
from faust.types import TP, Message
from intervaltree import IntervalTree

from services.settings import Settings
from streams import faust_fixes
from streams.app import build_app
from streams.faust_fixes import App, _Consumer, _finish


class LoopPasses:
    """Counts passes of the event loop while it runs."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopPasses:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        self.count = 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def deliver(coro: Any, suspend: asyncio.Event) -> None:
    service = mode.Service()
    consumer = SimpleNamespace(wait_first=service.wait_first, suspend_flow=suspend)
    await _Consumer._deliver(consumer, coro)  # type: ignore[arg-type]


async def test_a_record_that_need_not_wait_is_delivered_without_a_loop_pass() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=4)
    async with LoopPasses() as passes:
        for i in range(3):
            await deliver(queue.put(i), asyncio.Event())
        assert passes.count == 0
    assert [queue.get_nowait() for _ in range(3)] == [0, 1, 2]


async def waiting_to_put(queue: asyncio.Queue[Any]) -> None:
    """Let the loop run until a put is waiting for room in `queue` (a few passes, no clock)."""
    for _ in range(100):
        if queue._putters:  # type: ignore[attr-defined]  # asyncio.Queue's waiting putters
            return
        await asyncio.sleep(0)
    raise AssertionError("no put is waiting for room")


async def loop_passes(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_record_waiting_for_room_is_delivered_once_there_is_room() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    delivery = asyncio.create_task(deliver(queue.put("second"), asyncio.Event()))
    await waiting_to_put(queue)
    assert not delivery.done()
    assert queue.get_nowait() == "first"
    await asyncio.wait_for(delivery, 5)
    assert queue.get_nowait() == "second"


async def test_a_waiting_record_is_abandoned_when_the_flow_is_suspended() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    suspend = asyncio.Event()
    delivery = asyncio.create_task(deliver(queue.put("second"), suspend))
    await waiting_to_put(queue)
    suspend.set()  # a rebalance: the partition may belong to another worker now
    await asyncio.wait_for(delivery, 5)
    assert queue.get_nowait() == "first"
    await loop_passes(10)  # a put still alive would take the free room now
    assert queue.empty()  # the abandoned record never went in


async def test_finish_passes_a_futures_error_to_the_coroutine() -> None:
    failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> str:
        try:
            await failing
        except KeyError:
            return "handled"
        return "not raised"

    coro = waits()
    yielded = coro.send(None)
    assert yielded is failing
    asyncio.get_running_loop().call_soon(failing.set_exception, KeyError("x"))
    assert await _finish(coro, yielded) == "handled"


async def test_finish_runs_a_coroutine_through_bare_yields() -> None:
    async def steps() -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        return 42

    coro = steps()
    assert coro.send(None) is None  # asyncio.sleep(0) yields None
    assert await _finish(coro, None) == 42


async def test_cancelling_finish_cancels_the_coroutine() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned_up = []

    async def waits_forever() -> None:
        try:
            await never
        finally:
            cleaned_up.append(True)

    coro = waits_forever()
    task = asyncio.create_task(_finish(coro, coro.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up == [True]
    assert never.cancelled()


async def test_stream_iterators_give_way_at_most_every_two_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(faust_fixes, "_clock", lambda: now[0])
    monkeypatch.setattr(faust_fixes, "_last_yield", 0.0)
    sleep = faust_fixes._sleep_now_and_then
    async with LoopPasses() as passes:
        await sleep(0)  # long since anyone gave way: this one does
        assert passes.count == 1
        for _ in range(50):
            await sleep(0)
        assert passes.count == 1  # within 2 ms: no pass each
        now[0] += 2 * faust_fixes.STREAM_YIELD_EVERY_S
        await sleep(0)
        assert passes.count == 2
        await sleep(0.001)  # a real delay is always a real sleep
        assert passes.count >= 3


def test_build_app_installs_the_iterator_sleep_and_sizes_topic_buffers() -> None:
    from faust._cython import streams as cython_streams

    settings = Settings.model_validate({"kafka": {"bootstrap": "127.0.0.1:9", "bulk_buffer": 777}})
    app, _ = build_app(settings)
    assert cython_streams.sleep is faust_fixes._sleep_now_and_then
    buffers = {
        topic: agent.channel.queue.maxsize for agent in app.agents.values() for topic in agent.channel.topics
    }
    assert buffers["documents.chunks"] == 777  # the bulk lane: a deep buffer
    assert buffers["chunks.cards"] == 777  # the tracker's facts
    assert buffers["documents.chunks.interactive"] == app.conf.stream_buffer_maxsize


async def test_a_started_producer_is_returned_without_a_loop_pass() -> None:
    app = App("adaptations-test", broker="deckstream-kafka://127.0.0.1:9", web_enabled=False)
    producer = app.producer
    producer._started.set()  # as after the worker started it
    async with LoopPasses() as passes:
        for _ in range(5):
            assert await app.maybe_start_producer() is producer
        assert passes.count == 0


def _offsets_consumer(committed: int | None) -> Any:
    """A _Consumer with only the state Faust's offset bookkeeping reads."""
    consumer: Any = _Consumer.__new__(_Consumer)
    consumer._gap = defaultdict(IntervalTree)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._committed_offset = defaultdict(lambda: committed)
    consumer._unacked_messages = set()
    return consumer


def _taken(consumer: Any, tp: TP, offset: int) -> Message:
    """A record an agent has taken and not acked yet."""
    message = Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)
    consumer._unacked_messages.add(message)
    return message


def _acked(consumer: Any, tp: TP, *offsets: int) -> None:
    consumer._acked[tp].extend(offsets)
    consumer._acked_index[tp].update(offsets)


@pytest.mark.parametrize("committed", [2585, None])
def test_no_commit_passes_a_record_still_being_processed(committed: int | None) -> None:
    tp = TP("documents.chunks", 2)
    consumer = _offsets_consumer(committed)
    slow = _taken(consumer, tp, 2585)  # the chunk at the committed offset is still at the LLM
    _acked(consumer, tp, 2586, 2587, 2588, 2589)  # the chunks after it are done
    # Faust 0.15 alone returns 2590 here (#606): a worker killed now would never redo 2585.
    assert consumer._new_offset(tp) is None
    slow.acked = True
    consumer._unacked_messages.discard(slow)
    _acked(consumer, tp, 2585)
    assert consumer._new_offset(tp) == 2590  # nothing acked was forgotten meanwhile


def test_a_commit_stops_at_the_first_record_still_being_processed() -> None:
    tp = TP("documents.chunks", 0)
    consumer = _offsets_consumer(10)
    _acked(consumer, tp, 10, 11, 12, 14, 15)
    _taken(consumer, tp, 13)
    _taken(consumer, TP("documents.chunks", 1), 3)  # another partition's work does not hold this one
    assert consumer._new_offset(tp) == 13
    assert consumer._acked[tp] == [14, 15]  # kept for the commit after 13 is done


CHANGELOG = "deckstream-g1-documents-changelog"


def _rebalancing_consumer(assigned: set[TP]) -> Any:
    """A _Consumer with only the state Faust's pause/resume bookkeeping reads, mid-rebalance."""
    consumer: Any = _Consumer.__new__(_Consumer)
    consumer.app = SimpleNamespace(rebalancing=True, tables=SimpleNamespace(changelog_topics={CHANGELOG}))
    consumer._active_partitions = None
    consumer._paused_partitions = set()
    consumer.assignment = lambda: assigned
    return consumer


def test_stream_partitions_resume_only_when_the_rebalance_has_ended() -> None:
    chunks, cards, changelog = TP("documents.chunks", 0), TP("chunks.cards", 0), TP(CHANGELOG, 0)
    consumer = _rebalancing_consumer({chunks, cards, changelog})
    # Faust's order on a worker's first assignment: pause everything, resume the changelog to
    # read the table back, then (Recovery.on_recovery_completed) resume the stream partitions,
    # seek, and empty every agent buffer with flow_control.resume(); then on_rebalance_end.
    consumer.pause_partitions({chunks, cards, changelog})
    consumer.resume_partitions({changelog})
    assert consumer._get_active_partitions() == {changelog}
    consumer.pause_partitions({changelog})
    consumer.resume_partitions({chunks, cards})
    assert consumer._get_active_partitions() == set()  # nothing fetched that the clear would drop
    consumer.app.rebalancing = False  # App.on_rebalance_end
    consumer.resume_held_back()
    assert consumer._get_active_partitions() == {chunks, cards}
    consumer.resume_held_back()  # once only
    assert consumer._get_active_partitions() == {chunks, cards}


def test_a_partition_taken_back_before_the_rebalance_ends_is_not_resumed() -> None:
    kept, moved, revoked = TP("documents.chunks", 0), TP("documents.chunks", 1), TP("documents.chunks", 2)
    consumer = _rebalancing_consumer({kept, moved, revoked})
    consumer.pause_partitions({kept, moved, revoked})
    consumer.resume_partitions({kept, moved, revoked})
    consumer.pause_partitions({moved})  # a new rebalance began and paused it again
    consumer.assignment = lambda: {kept, moved}  # and the last one went to another worker
    consumer.resume_held_back()
    assert consumer._get_active_partitions() == {kept}


def test_outside_a_rebalance_partitions_resume_at_once() -> None:
    tp = TP("documents.chunks", 3)
    consumer = _rebalancing_consumer({tp})
    consumer.app.rebalancing = False
    consumer.pause_partitions({tp})
    consumer.resume_partitions({tp})
    assert consumer._get_active_partitions() == {tp}


def test_a_documents_state_is_in_the_partition_of_its_events() -> None:
    """The tracker's table is changelogged by key: its key bytes must be the topics' key bytes
    (the document id in UTF-8, as the API and the agents send), or with two workers a document's
    events and its state live on different workers."""
    from aiokafka.partitioner import DefaultPartitioner

    settings = Settings.model_validate(
        {"kafka": {"bootstrap": "127.0.0.1:9", "partitions": 4}, "llm": {"url": "http://llm"}}
    )
    app, _ = build_app(settings)
    table = app.tables["documents"]
    changelog = table.changelog_topic
    partition_of = DefaultPartitioner()
    ids = [f"{n:032x}" for n in range(0, 2**128, 2**122)][:32]
    for document_id in ids:
        key, _ = changelog.prepare_key(document_id.encode(), table.key_serializer, changelog.schema)
        assert key == document_id.encode()  # what the API and the agents send as the key
    # with Faust's default for str keys (JSON), many would be in another partition
    assert (
        sum(
            partition_of(f'"{d}"'.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
            != partition_of(d.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
            for d in ids
        )
        > 8
    )


async def test_work_waiting_on_the_flow_learns_when_it_stops_and_again_after_it_resumes() -> None:
    consumer: Any = _Consumer.__new__(_Consumer)
    consumer.can_resume_flow, consumer.suspend_flow = asyncio.Event(), asyncio.Event()
    consumer.flow_active = True
    first = consumer.flow_stopped
    assert not first.done() and consumer.flow_stopped is first  # one future for every waiter

    consumer.stop_flow()  # a rebalance starts (Faust's _on_partitions_revoked) or a shutdown
    assert first.done() and consumer.flow_stopped.done()

    consumer.resume_flow()
    again = consumer.flow_stopped
    assert not again.done() and again is not first
    consumer.stop_flow()
    assert again.done()

    stopped_before_asked: Any = _Consumer.__new__(_Consumer)
    stopped_before_asked.flow_active = False
    assert stopped_before_asked.flow_stopped.done()


async def test_the_workers_producer_is_idempotent(tmp_path: Any) -> None:
    """0013: Faust sets enable_idempotence only in transactions; the worker's always has it."""
    settings = Settings.model_validate({"home": tmp_path, "kafka": {"bootstrap": "127.0.0.1:9"}})
    app, _ = build_app(settings)
    assert not app.in_transaction
    producer = app.producer._new_producer()  # the aiokafka producer Faust would start (not started)
    assert producer._txn_manager is not None  # aiokafka makes one only for an idempotent producer
    await producer.stop()
