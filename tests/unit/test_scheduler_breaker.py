"""The in-flight limiter (caps, fairness across documents), the circuit breaker, and admission
through both, which a worker whose flow stops (rebalance, shutdown) gives up."""

from __future__ import annotations

import asyncio

import pytest

from services.errors import PermanentError, RetryableError
from services.llm.breaker import CircuitBreaker
from services.llm.scheduler import InflightScheduler, admit


async def settle(rounds: int = 10) -> None:
    """Let every runnable task run until it blocks (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Load:
    """Requests that hold their slot until released, recording what a backend would see."""

    def __init__(self, sched: InflightScheduler) -> None:
        self.sched = sched
        self.started: list[str] = []
        self.active: dict[str, int] = {}
        self.peak_total = 0
        self.peak_per_key: dict[str, int] = {}
        self.gates: list[asyncio.Event] = []

    async def request(self, key: str) -> None:
        async with self.sched.slot(key):
            self.started.append(key)
            self.active[key] = self.active.get(key, 0) + 1
            self.peak_total = max(self.peak_total, sum(self.active.values()))
            self.peak_per_key[key] = max(self.peak_per_key.get(key, 0), self.active[key])
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
            self.active[key] -= 1

    async def finish_one(self) -> None:
        self.gates.pop(0).set()
        await settle()


async def test_total_cap_is_never_exceeded() -> None:
    load = Load(InflightScheduler(total=3))
    tasks = [asyncio.create_task(load.request(f"doc-{i % 4}")) for i in range(20)]
    await settle()
    assert len(load.started) == 3 and load.sched.waiting == 17
    while len(load.started) < 20 or load.gates:
        await load.finish_one()
    await asyncio.gather(*tasks)
    assert load.peak_total == 3 and load.sched.in_use == 0


async def test_per_key_cap() -> None:
    load = Load(InflightScheduler(total=4, per_key=2))
    tasks = [asyncio.create_task(load.request("big")) for _ in range(6)]
    await settle()
    assert load.sched.held("big") == 2 and load.sched.in_use == 2  # two slots stay free for others
    while load.gates:
        await load.finish_one()
    await asyncio.gather(*tasks)
    assert load.peak_per_key == {"big": 2}


@pytest.mark.parametrize(("per_key", "small_starts_at"), [(1, 1), (0, 5)])
async def test_a_small_document_is_not_starved_by_a_big_backlog(per_key: int, small_starts_at: int) -> None:
    load = Load(InflightScheduler(total=2, per_key=per_key))
    tasks = [asyncio.create_task(load.request("big")) for _ in range(5)]
    await settle()
    tasks.append(asyncio.create_task(load.request("small")))
    await settle()
    while len(load.started) < 6:
        await load.finish_one()
    # With a per-document cap "small" starts at once, beside one "big" request, while "big"
    # still has a backlog; without one it queues behind all five (plain FIFO).
    assert load.started.index("small") == small_starts_at
    while load.gates:
        await load.finish_one()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    load = Load(InflightScheduler(total=1))
    first = asyncio.create_task(load.request("a"))
    queued = asyncio.create_task(load.request("a"))
    await settle()
    queued.cancel()
    await settle()
    await load.finish_one()
    await first
    assert queued.cancelled() and load.sched.in_use == 0 and load.sched.waiting == 0
    async with load.sched.slot("b"):
        assert load.sched.held("b") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def breaker(clock: Clock, threshold: int = 3, cooldown_s: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(threshold, cooldown_s, clock=clock, sleep=clock.sleep)


async def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = breaker(Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open"


async def test_callers_wait_out_the_cooldown_and_one_probe_goes_first() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now = 10.0
    probe = asyncio.create_task(b.wait_until_closed())
    await settle()
    assert probe.done() and clock.slept == [20.0] and b.state == "half-open"
    others = [asyncio.create_task(b.wait_until_closed()) for _ in range(3)]
    await settle()
    assert not any(t.done() for t in others)  # they wait for the probe's verdict
    b.record_success()
    await settle()
    assert all(t.done() for t in others) and b.state == "closed"


async def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown_s=5.0)
    b.record_failure()
    await b.wait_until_closed()  # sleeps 5 s on the fake clock, then probes
    waiter = asyncio.create_task(b.wait_until_closed())
    await settle()
    b.record_failure()
    assert b.state == "open"
    await settle()
    assert waiter.done() and clock.slept == [5.0, 5.0]  # the waiter became the next probe
    b.record_success()
    assert b.state == "closed"


async def test_guard_counts_only_retryable_errors_as_failures() -> None:
    b = breaker(Clock(), threshold=2)

    async def fail(error: Exception) -> None:
        raise error

    with pytest.raises(PermanentError):
        await b.call(lambda: fail(PermanentError("bad answer")))
    with pytest.raises(RetryableError):
        await b.call(lambda: fail(RetryableError("503")))
    assert b.state == "closed" and b.consecutive_failures == 1
    with pytest.raises(RetryableError):
        await b.call(lambda: fail(RetryableError("503")))
    assert b.state == "open"


async def test_a_cancelled_probe_lets_another_caller_probe() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown_s=1.0)
    b.record_failure()
    clock.now = 2.0
    gate = asyncio.Event()

    async def hang() -> None:
        await gate.wait()

    probe = asyncio.create_task(b.call(hang))
    await settle()
    second = asyncio.create_task(b.wait_until_closed())
    await settle()
    assert b.state == "half-open" and not second.done()
    probe.cancel()
    await settle()
    assert second.done()


async def test_a_probe_that_already_waited_makes_its_call() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1, cooldown_s=1.0)
    b.record_failure()
    clock.now = 2.0
    await b.wait_until_closed()  # this caller is the half-open probe

    async def ok() -> str:
        return "cards"

    assert await asyncio.wait_for(b.call(ok, waited=True), 1) == "cards"  # no second wait
    assert b.state == "closed"


# ---------------------------------------------------------------- admission (slot + breaker)


def real_breaker(threshold: int = 1, cooldown_s: float = 60.0) -> CircuitBreaker:
    """A breaker on the real clock; its cool-downs are only ever cancelled, never waited out."""
    return CircuitBreaker(threshold, cooldown_s)


async def test_a_free_slot_and_a_closed_breaker_admit_without_a_pass_of_the_loop() -> None:
    sched = InflightScheduler(total=1)
    coro = admit(sched, real_breaker(), "doc", give_up=asyncio.get_running_loop().create_future())
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value is True and sched.held("doc") == 1


async def test_a_slot_is_not_taken_ahead_of_waiters() -> None:
    sched = InflightScheduler(total=1)
    await sched.acquire("a")
    queued = asyncio.create_task(sched.acquire("b"))
    await settle()
    sched.release("a")  # b is granted the slot on release...
    assert not sched.try_acquire("c")  # ...so c may not take it
    await queued
    assert sched.held("b") == 1 and sched.held("c") == 0


async def test_work_queued_for_a_slot_is_handed_back_when_the_flow_stops() -> None:
    sched, give_up = InflightScheduler(total=1), asyncio.get_running_loop().create_future()
    await sched.acquire("book")
    queued = [asyncio.create_task(admit(sched, real_breaker(), "book", give_up=give_up)) for _ in range(3)]
    await settle()
    assert sched.waiting == 3 and not any(t.done() for t in queued)

    give_up.set_result(None)
    await settle()
    assert [t.result() for t in queued] == [False, False, False]
    assert sched.waiting == 0 and sched.in_use == 1  # only the call that had started
    sched.release("book")
    assert sched.in_use == 0


async def test_work_waiting_out_an_llm_outage_is_handed_back_holding_nothing() -> None:
    sched, b = InflightScheduler(total=4), real_breaker(threshold=1, cooldown_s=60.0)
    give_up = asyncio.get_running_loop().create_future()
    b.record_failure()  # open for a minute
    waiting = [asyncio.create_task(admit(sched, b, "doc", give_up=give_up)) for _ in range(6)]
    await settle()
    assert not any(t.done() for t in waiting) and sched.in_use == 4 and sched.waiting == 2

    give_up.set_result(None)
    await settle()
    assert [t.result() for t in waiting] == [False] * 6
    assert sched.in_use == 0 and sched.waiting == 0
    b.record_success()  # the server is back: a new chunk goes straight ahead
    assert await admit(sched, b, "doc", give_up=asyncio.get_running_loop().create_future())


async def test_the_half_open_probe_goes_ahead_and_the_others_are_handed_back() -> None:
    sched, b = InflightScheduler(total=4), real_breaker(threshold=1, cooldown_s=0.0)
    give_up = asyncio.get_running_loop().create_future()
    b.record_failure()  # open, with the cool-down already over
    tasks = [asyncio.create_task(admit(sched, b, "doc", give_up=give_up)) for _ in range(3)]
    await settle()
    [probe] = [t for t in tasks if t.done()]
    assert probe.result() is True and b.state == "half-open"

    give_up.set_result(None)
    await settle()
    assert sorted(t.result() for t in tasks) == [False, False, True]
    assert sched.in_use == 1  # the probe's slot, for its call


async def test_a_slot_granted_just_as_the_flow_stops_is_used_not_leaked() -> None:
    sched, give_up = InflightScheduler(total=1), asyncio.get_running_loop().create_future()
    await sched.acquire("a")
    queued = asyncio.create_task(admit(sched, real_breaker(), "b", give_up=give_up))
    await settle()
    sched.release("a")  # b's slot is granted...
    give_up.set_result(None)  # ...and the flow stops before b runs again
    await settle()
    assert queued.result() is True and sched.held("b") == 1


async def test_cancelling_a_waiting_admission_cancels_it_and_frees_its_place() -> None:
    sched, give_up = InflightScheduler(total=1), asyncio.get_running_loop().create_future()
    await sched.acquire("a")
    queued = asyncio.create_task(admit(sched, real_breaker(), "b", give_up=give_up))
    await settle()
    queued.cancel()
    await settle()
    assert queued.cancelled() and sched.waiting == 0 and sched.in_use == 1


async def test_an_open_breaker_says_why_calls_are_held_back() -> None:
    b = breaker(Clock(), threshold=1)
    assert b.unavailable is None

    async def fail() -> None:
        raise RetryableError("LLM answered HTTP 503")

    with pytest.raises(RetryableError):
        await b.call(fail)
    assert b.state == "open" and b.unavailable == "LLM answered HTTP 503"
    b.record_success()
    assert b.unavailable is None


async def test_without_a_flow_to_watch_admission_just_waits_for_its_slot() -> None:
    sched = InflightScheduler(total=1)
    await sched.acquire("a")
    queued = asyncio.create_task(admit(sched, real_breaker(), "b"))
    await settle()
    assert not queued.done() and sched.waiting == 1
    sched.release("a")
    await settle()
    assert queued.result() is True and sched.held("b") == 1
