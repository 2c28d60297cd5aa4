"""Every correction deckstream makes to Faust, aiokafka and mode internals, in one place.

Each correction's docstring names its decision record under docs/decisions/: the upstream
behaviour at the pinned versions (faust-streaming 0.15.3, aiokafka 0.14.0, mode-streaming
0.7.1), how it was found, the test that proves it, and when to remove it.
tests/unit/test_pinned_internals.py fails when the installed versions differ from the pins.

- the worker's transport (`deckstream-kafka://`): a 50 ms fetch wait (0001), no fetch of an
  empty partition set (0002), a seek back for partitions never committed (0003), stream
  partitions resumed only after the rebalance (0004), no commit past a record in flight (0005),
  a signal to hand unstarted work back when the flow stops (0006), inline delivery (0007), an
  idempotent producer (0013);
- the app: a started producer returned at once (0008); stream iterators that give way every
  2 ms (0009). Settings and topic buffers (0010, 0012) are in streams/app.py, the tracker's
  table keys (0011) in streams/agents/track.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine, Generator, Iterable, Mapping
from typing import Any

import aiokafka
import faust
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TPset
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import ServiceT

from services.events.topics import FETCH_MAX_WAIT_MS

SCHEME = "deckstream-kafka"
GETMANY_TIMEOUT_S = 0.1


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        """A 50 ms broker fetch wait for the worker's consumer, not Faust's 1.5 s.

        Decision: docs/decisions/0001-fetch-wait-50-ms.md
        """
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; Faust hard-codes 1500.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP] | None,
        timeout: float | None = None,  # noqa: ASYNC109  (Faust's signature)
        max_records: int | None = None,
    ) -> Any:
        """Faust's fetch, of the partitions active now, and of none when none is.

        Decision: docs/decisions/0002-no-fetch-of-an-empty-partition-set.md
        """
        partitions = None if active_partitions is None else frozenset(active_partitions)
        if partitions is not None and not partitions:  # (None: a client-only app, as in Faust)
            return {}
        return await super()._fetch_records(consumer, partitions, timeout=timeout, max_records=max_records)  # type: ignore[arg-type]

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every partition to its committed offset, or to its start where it has none.

        Decision: docs/decisions/0003-rewind-partitions-never-committed.md
        """
        committed: Mapping[TP, int] = await self.call_thread(self._seek_to_committed)
        return committed

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        """The seek itself, in the consumer's thread.

        Decision: docs/decisions/0003-rewind-partitions-never-committed.md
        """
        consumer = self._ensure_consumer()
        committed: Mapping[TP, int] = await consumer.seek_to_committed()
        # Table changelogs are not committed: Faust's recovery seeks them itself.
        changelog = self.consumer._is_changelog_tp
        unset = [tp for tp, offset in committed.items() if not offset and not changelog(tp)]
        if unset:
            await consumer.seek_to_beginning(*unset)
        return committed


async def _finish(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Run `coro`, already started and now waiting on `waiting_on`, to its end in this task.

    Decision: docs/decisions/0007-inline-delivery-and-a-leaner-drain-loop.md
    """
    while True:
        try:
            if waiting_on is None:  # a bare yield: asyncio.sleep(0)
                await asyncio.sleep(0)
            else:  # as a Task does with a future its coroutine yields
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # passed on to the coroutine below
            if waiting_on is not None and waiting_on.done():
                pass  # the future's own outcome: the coroutine reads it when resumed
            else:  # this task was cancelled (say, by a rebalance): so is the coroutine
                if waiting_on is not None:
                    waiting_on.cancel()
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            return stop.value


class _Consumer(faust_aiokafka.Consumer):
    _held_back: frozenset[TP] = frozenset()  # stream partitions to resume when the rebalance ends
    _flow_stopped: asyncio.Future[None] | None = None

    @property
    def flow_stopped(self) -> asyncio.Future[None]:
        """Done while the flow is stopped (a rebalance or a shutdown): hand unstarted work back.

        Decision: docs/decisions/0006-hand-back-unstarted-work-when-the-flow-stops.md
        """
        fut = self._flow_stopped
        if fut is None or fut.done() == self.flow_active:  # made for the other state
            fut = self._flow_stopped = asyncio.get_running_loop().create_future()
            if not self.flow_active:
                fut.set_result(None)
        return fut

    def stop_flow(self) -> None:
        """Faust's stop_flow, which also tells the agents waiting on `flow_stopped`.

        Decision: docs/decisions/0006-hand-back-unstarted-work-when-the-flow-stops.md
        """
        super().stop_flow()
        if self._flow_stopped is not None and not self._flow_stopped.done():
            self._flow_stopped.set_result(None)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Resume fetching, but a stream partition only once the rebalance is over.

        Decision: docs/decisions/0004-resume-stream-partitions-after-the-rebalance.md
        """
        tpset = ensure_TPset(tps)
        if self.app.rebalancing:
            streams = {tp for tp in tpset if not self._is_changelog_tp(tp)}
            self._held_back |= streams
            tpset -= streams
        super().resume_partitions(tpset)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        """Pause, and forget a held-back partition that a new rebalance takes back.

        Decision: docs/decisions/0004-resume-stream-partitions-after-the-rebalance.md
        """
        tpset = ensure_TPset(tps)
        self._held_back -= tpset  # a new rebalance may take them back before the last one ends
        super().pause_partitions(tpset)

    def resume_held_back(self) -> None:
        """The rebalance is over and the agents' buffers were emptied: fetch what was held back.

        Decision: docs/decisions/0004-resume-stream-partitions-after-the-rebalance.md
        """
        held, self._held_back = self._held_back, frozenset()
        if held:
            super().resume_partitions(held & self.assignment())

    def _new_offset(self, tp: Any) -> int | None:
        """Faust's next offset to commit, but never past a record still being processed.

        Decision: docs/decisions/0005-never-commit-past-an-in-flight-record.md
        """
        in_flight = [m.offset for m in self._unacked_messages if m.tp == tp and not m.acked]
        if not in_flight:
            return super()._new_offset(tp)
        limit = min(in_flight)
        acked = self._acked[tp]
        later = [offset for offset in acked if offset >= limit]
        acked[:] = [offset for offset in acked if offset < limit]
        try:
            return super()._new_offset(tp)
        finally:
            acked.extend(later)  # still in _acked_index: Faust drops only what it commits

    async def _deliver(self, delivery: Coroutine[Any, Any, Any]) -> None:
        """Run the agents' callback for one record inline; wait as Faust does only if it blocks.

        Decision: docs/decisions/0007-inline-delivery-and-a-leaner-drain-loop.md
        """
        try:
            waiting_on = delivery.send(None)
        except StopIteration:
            return
        await self.wait_first(_finish(delivery, waiting_on), self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # faust.transport.consumer.Consumer._drain_messages (faust-streaming 0.15.x, pinned),
        # with the record handed over by _deliver instead of wait_first, a shorter getmany, and
        # no sleep(0) before it.
        """Faust's drain loop with inline delivery, a 0.1 s getmany and no sleep(0) per fetch.

        Decision: docs/decisions/0007-inline-delivery-and-a-leaner-drain-loop.md
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                # Faust awaits self.sleep(0) here: a wait_for() with a task that is cancelled at
                # once, three passes of a loop that is busy with LLM calls. getmany() hands over
                # to the consumer's thread and waits for it anyway.
                ait = getmany(timeout=GETMANY_TIMEOUT_S)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            delivery: Awaitable[Any] = callback(message)
                            await self._deliver(delivery)  # type: ignore[arg-type]
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


def flow_stopped(app: Any) -> asyncio.Future[None] | None:
    """The worker's `_Consumer.flow_stopped`; None for another consumer (no hand-back).

    Decision: docs/decisions/0006-hand-back-unstarted-work-when-the-flow-stops.md
    """
    consumer = app.consumer
    return consumer.flow_stopped if isinstance(consumer, _Consumer) else None


async def hand_back(topic: Any, event: Any) -> None:
    """Put an event back at the end of its partition and see it stored before its record is read.

    Decision: docs/decisions/0006-hand-back-unstarted-work-when-the-flow-stops.md
    """
    await (await topic.send(key=event.document_id, value=event))


class App(faust.App):
    """faust.App without passes of the event loop per message sent, resuming held-back partitions.

    Decision: docs/decisions/0008-return-a-started-producer-at-once.md
    """

    async def maybe_start_producer(self) -> Any:
        """The producer at once once it runs (no stampede sleeps).

        Decision: docs/decisions/0008-return-a-started-producer-at-once.md
        """
        producer = self.producer
        if producer.started and not self.in_transaction:
            return producer
        return await super().maybe_start_producer()

    def on_rebalance_end(self) -> None:
        """Also start fetching the stream partitions held back during the rebalance.

        Decision: docs/decisions/0004-resume-stream-partitions-after-the-rebalance.md
        """
        super().on_rebalance_end()
        consumer = self.consumer
        if isinstance(consumer, _Consumer):
            consumer.resume_held_back()


STREAM_YIELD_EVERY_S = 0.002


class _Ready:
    """An awaitable that is done at once (no pass of the event loop).

    Decision: docs/decisions/0009-stream-iterators-yield-every-2-ms.md
    """

    def __await__(self) -> Generator[Any, Any, None]:
        yield from ()


_READY = _Ready()
_clock = time.monotonic
_last_yield = 0.0


def _sleep_now_and_then(delay: float, result: Any = None) -> Awaitable[Any]:
    """asyncio.sleep, except that sleep(0) gives way to others at most every 2 ms.

    Decision: docs/decisions/0009-stream-iterators-yield-every-2-ms.md
    """
    global _last_yield
    if delay == 0:
        now = _clock()
        if now - _last_yield < STREAM_YIELD_EVERY_S:
            return _READY
        _last_yield = now
    return asyncio.sleep(delay, result)


def streams_yield_less() -> None:
    """Faust's stream iterators give way every 2 ms, not before every event.

    Decision: docs/decisions/0009-stream-iterators-yield-every-2-ms.md
    """
    try:
        from faust._cython import streams as cython_streams
    except ImportError:  # the pure-Python iterator takes asyncio.sleep as a local: left as is
        return
    cython_streams.sleep = _sleep_now_and_then


class _Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        """An idempotent producer always, not only in a transaction: a send retried after a lost
        acknowledgement (a broker killed, a leader moved) is not written twice.

        Decision: docs/decisions/0013-an-idempotent-producer.md
        """
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
