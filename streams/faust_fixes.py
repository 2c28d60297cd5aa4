"""Faust's aiokafka transport, with a short fetch wait and a cheap hand-off (`deckstream-kafka://`).

One consumer feeds every agent of a worker, and it has one fetch request in flight to the
broker at a time. A fetch covers only the partitions with nothing buffered, and Faust makes
the broker hold it for up to 1.5 s when those are quiet: meanwhile the partitions that do
have new records (chunks for the LLM, facts for the tracker) wait. Measured on the generation
bench: idle gaps of 1-1.5 s in a 7 s run. A 50 ms wait costs the broker about 20 empty
fetches a second per idle worker.

Faust hands each record to its agents inside `wait_first(callback(record), suspend_flow)`: four
tasks, three of them cancelled again, and two passes of the event loop per record. With 64 LLM
calls in flight a pass takes milliseconds, and the generation bench measured chunks reaching
their actors 1.4 s (median) after they were published: the consumer, not the LLM, set the pace.
Here the callback runs inline, and only a record that has to wait (a full channel) takes
Faust's path, so a rebalance can still abandon it.

When an agent's buffer fills, Faust stops fetching that partition until the buffer is down to
40%, but a `getmany` already waiting keeps the old partition list until its timeout, which
Faust sets at 1 s: the bench saw a book's last cards wait in 1 s steps for a tracker that
had long emptied its buffer. A 0.1 s timeout bounds that stall.

Commits never pass a record an agent is still working on (faust #606; see `_new_offset`), and
a rebalance or a restart drops no record unread: no fetch of an empty partition set (aiokafka
reads it as "all"), a seek back for partitions never committed, and stream partitions paused
until Faust's recovery has emptied the agents' buffers for the last time. And a rebalance or
a shutdown need not wait for work that has not started: `flow_stopped` tells agents to hand it
back.
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

        Faust hands over its own set of active partitions, which the event loop's thread keeps
        changing (a rebalance pauses them), and aiokafka reads an empty set as "every
        partition": a fetch that starts as table recovery pauses its changelog partitions
        returns the paused stream partitions' records, which Faust's `getmany` then drops as
        inactive, after aiokafka has moved its position past them. Traced on the SIGKILL fault
        test: a restarted worker's first fetch took chunks 0-190 that no agent ever saw.
        """
        partitions = None if active_partitions is None else frozenset(active_partitions)
        if partitions is not None and not partitions:  # (None: a client-only app, as in Faust)
            return {}
        return await super()._fetch_records(consumer, partitions, timeout=timeout, max_records=max_records)  # type: ignore[arg-type]

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed: Mapping[TP, int] = await self.call_thread(self._seek_to_committed)
        return committed

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every partition to its committed offset, or where there is none, to its start.

        aiokafka seeks only partitions with a committed offset above 0 and leaves the others
        wherever its fetcher has got to, so after a rebalance Faust re-read from the committed
        offset only the partitions that had one: records of a partition never committed that
        were fetched before the rebalance and dropped by it were never read again. Our
        consumers reset to the earliest offset, so "no committed offset" means the start.
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
    """Run `coro`, already started and now waiting on `waiting_on`, to its end in this task."""
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
        """Done while the flow is stopped: a rebalance or a shutdown waits for every record an
        agent holds (`stream_wait_empty`), so work not yet started should be handed back.
        One future for every waiter, made again once the flow resumes."""
        fut = self._flow_stopped
        if fut is None or fut.done() == self.flow_active:  # made for the other state
            fut = self._flow_stopped = asyncio.get_running_loop().create_future()
            if not self.flow_active:
                fut.set_result(None)
        return fut

    def stop_flow(self) -> None:
        super().stop_flow()
        if self._flow_stopped is not None and not self._flow_stopped.done():
            self._flow_stopped.set_result(None)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Resume fetching, but a stream partition only once the rebalance is over.

        Faust's recovery resumes the stream partitions, seeks them to their committed offsets
        and only then calls `flow_control.resume()`, which empties every agent's buffer
        (faust-streaming 0.15, `Recovery.on_recovery_completed` and `_resume_streams`). Records
        fetched in between are delivered, then dropped with the buffers, and never read again:
        the seek came before the clear, and the read offset has moved past them.
        Traced on the SIGKILL fault test: a restarted worker took in a killed worker's 264
        chunks, the buffers were cleared with 228 of them in, and only the reconciler's resend
        brought them back. Here the stream partitions stay paused until `App.on_rebalance_end`,
        which runs after that last clear; changelog partitions (table recovery) resume at once.
        """
        tpset = ensure_TPset(tps)
        if self.app.rebalancing:
            streams = {tp for tp in tpset if not self._is_changelog_tp(tp)}
            self._held_back |= streams
            tpset -= streams
        super().resume_partitions(tpset)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tpset = ensure_TPset(tps)
        self._held_back -= tpset  # a new rebalance may take them back before the last one ends
        super().pause_partitions(tpset)

    def resume_held_back(self) -> None:
        """The rebalance is over and the agents' buffers were emptied: fetch from every stream
        partition that recovery resumed."""
        held, self._held_back = self._held_back, frozenset()
        if held:
            super().resume_partitions(held & self.assignment())

    def _new_offset(self, tp: Any) -> int | None:
        """Faust's next offset to commit, but never past a record still being processed.

        faust-streaming 0.15 takes one missing offset at the head of the acked run for a gap
        in the log, so with concurrent actors it commits over the record at the committed
        offset while an actor still works on it (faust #606, fix in PR #707, not released):
        a worker killed then loses that chunk until the reconciler notices. Here the acked
        offsets at or above the lowest record an actor has taken but not acked are held back
        from Faust's computation, and kept for a later commit.
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
        """Run the agents' callback for one record inline; wait as Faust does only if it blocks."""
        try:
            waiting_on = delivery.send(None)
        except StopIteration:
            return
        await self.wait_first(_finish(delivery, waiting_on), self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # faust.transport.consumer.Consumer._drain_messages (faust-streaming 0.15.x, pinned),
        # with the record handed over by _deliver instead of wait_first, a shorter getmany, and
        # no sleep(0) before it.
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
    """The worker's `_Consumer.flow_stopped`; None for another consumer (no hand-back)."""
    consumer = app.consumer
    return consumer.flow_stopped if isinstance(consumer, _Consumer) else None


async def hand_back(topic: Any, event: Any) -> None:
    """Put an event not yet worked on at the end of its topic's partition (keyed by its
    document), and see it stored before the record it replaces can be committed as read."""
    await (await topic.send(key=event.document_id, value=event))


class App(faust.App):
    """faust.App without three passes of the event loop per message sent.

    Every `Topic.send()` first awaits `app.maybe_start_producer()`, which mode's `@stampede`
    wraps in up to three `asyncio.sleep(0)`: each send then waits for as many full passes of an
    event loop that is busy with 64 LLM calls. Measured on the generation bench: 1-3 ms per
    page sent, and 2.3 s to publish a book's 1,047 pages and chunks (0.2 s of it CPU). Once the
    producer runs, it is returned at once.
    """

    async def maybe_start_producer(self) -> Any:
        producer = self.producer
        if producer.started and not self.in_transaction:
            return producer
        return await super().maybe_start_producer()

    def on_rebalance_end(self) -> None:
        """Also start fetching the stream partitions held back during the rebalance (see
        `_Consumer.resume_partitions`)."""
        super().on_rebalance_end()
        consumer = self.consumer
        if isinstance(consumer, _Consumer):
            consumer.resume_held_back()


STREAM_YIELD_EVERY_S = 0.002


class _Ready:
    """An awaitable that is done at once (no pass of the event loop)."""

    def __await__(self) -> Generator[Any, Any, None]:
        yield from ()


_READY = _Ready()
_clock = time.monotonic
_last_yield = 0.0


def _sleep_now_and_then(delay: float, result: Any = None) -> Awaitable[Any]:
    """asyncio.sleep, except that sleep(0) gives way to others at most every 2 ms."""
    global _last_yield
    if delay == 0:
        now = _clock()
        if now - _last_yield < STREAM_YIELD_EVERY_S:
            return _READY
        _last_yield = now
    return asyncio.sleep(delay, result)


def streams_yield_less() -> None:
    """Faust's stream iterator awaits sleep(0) before every event, so an agent takes one event
    per pass of the event loop. With 64 LLM calls in flight a pass takes 10-15 ms: the tracker
    got 4 events per batch while 350 pages waited, and a book's chunk count reached its user
    4.0 s after upload instead of 1.8 s. Here an iterator gives way when 2 ms have passed since
    any iterator last did."""
    try:
        from faust._cython import streams as cython_streams
    except ImportError:  # the pure-Python iterator takes asyncio.sleep as a local: left as is
        return
    cython_streams.sleep = _sleep_now_and_then


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
