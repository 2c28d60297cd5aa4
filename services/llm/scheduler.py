"""A bounded in-flight limiter for LLM calls, fair across documents.

    async with sched.slot(document_id):
        await llm.generate(...)

At most ``total`` slots are held at once (size it to the backend: llama.cpp ``n_parallel``,
Ollama ``NUM_PARALLEL``, vLLM ~64). Waiters are served first come, first served, except that
with ``per_key > 0`` a key (a document) never holds more than ``per_key`` slots: a waiter whose
key is at its cap is skipped, so a small document's request goes ahead of a big document's
backlog instead of queueing behind all of it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.llm.breaker import CircuitBreaker


@dataclass(slots=True)
class _Waiter:
    key: str
    future: asyncio.Future[None]
    priority: int = 0


class InflightScheduler:
    def __init__(self, total: int, per_key: int = 0) -> None:
        if total < 1 or per_key < 0:
            raise ValueError("total must be ≥ 1 and per_key ≥ 0")
        self.total, self.per_key = total, per_key
        self._held: Counter[str] = Counter()
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_use(self) -> int:
        return sum(self._held.values())

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def held(self, key: str) -> int:
        return self._held[key]

    def _may_take(self, key: str) -> bool:
        return self.in_use < self.total and (self.per_key == 0 or self._held[key] < self.per_key)

    def _dispatch(self) -> None:
        """Grant free slots to waiters in FIFO order, skipping keys at their cap."""
        for waiter in sorted(self._waiters, key=lambda w: -w.priority):  # stable: FIFO within a priority
            if self.in_use >= self.total:
                return
            if waiter.future.done():  # cancelled while waiting
                self._waiters.remove(waiter)
            elif self._may_take(waiter.key):
                self._waiters.remove(waiter)
                self._held[waiter.key] += 1
                waiter.future.set_result(None)

    def try_acquire(self, key: str = "") -> bool:
        """Take a slot at once if one is free and nobody waits for one (no queue-jumping)."""
        if self._waiters or not self._may_take(key):
            return False
        self._held[key] += 1
        return True

    async def acquire(self, key: str = "", priority: int = 0) -> None:
        """Wait for a slot; a higher priority (the interactive lane) is served first."""
        waiter = _Waiter(key, asyncio.get_running_loop().create_future(), priority)
        self._waiters.append(waiter)
        self._dispatch()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(key)  # granted just as we were cancelled: give it back
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self, key: str = "") -> None:
        if self._held[key] <= 0:
            raise RuntimeError(f"release without a slot held for {key!r}")
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        self._dispatch()

    @asynccontextmanager
    async def slot(self, key: str = "", priority: int = 0) -> AsyncIterator[None]:
        await self.acquire(key, priority)
        try:
            yield
        finally:
            self.release(key)


async def admit(
    sched: InflightScheduler,
    breaker: CircuitBreaker,
    key: str,
    priority: int = 0,
    *,
    give_up: asyncio.Future[None] | None = None,
) -> bool:
    """Hold a slot for ``key`` with the breaker letting a call through, and return True; the
    caller then makes its call with ``breaker.call(fn, waited=True)`` and releases the slot.

    Returns False, holding nothing, if ``give_up`` is done first: the worker's flow stopped
    for a rebalance or a shutdown while this work was still queued for a slot or waiting out
    an LLM outage, so it can be handed back instead of holding the rebalance up. Free slot
    and closed breaker (the common case): no task and no pass of the event loop.
    """
    holding = sched.try_acquire(key)
    if holding and breaker.state == "closed":
        return True
    if give_up is not None and give_up.done():
        if holding:
            sched.release(key)
        return False

    async def take() -> None:
        if not holding:
            await sched.acquire(key, priority)
        try:
            await breaker.wait_until_closed()
        except BaseException:
            sched.release(key)
            raise

    if give_up is None:
        await take()
        return True
    task = asyncio.ensure_future(take())
    try:
        await asyncio.wait((task, give_up), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just giving up
            return False
    task.result()  # admitted (perhaps just as it gave up: then the call goes ahead)
    return True
