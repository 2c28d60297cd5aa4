"""A bounded in-flight limiter for LLM calls, fair across tenants and across documents.

    async with sched.slot(document_id, tenant=tenant_id):
        await llm.generate(...)

At most ``total`` slots are held at once (size it to the backend: llama.cpp ``n_parallel``,
Ollama ``NUM_PARALLEL``, vLLM ~64). A free slot goes to a waiter of the highest priority (the
interactive lane) first; among those, to the tenant holding the fewest slots, and between
tenants holding as many, to the one served least recently (round-robin): one tenant's backlog
of books takes turns with another tenant's small upload instead of running ahead of it. Within
a tenant waiters are served first come, first served, except that with ``per_key > 0`` a key (a
document) never holds more than ``per_key`` slots: a waiter whose key is at its cap is skipped,
so a small document's request goes ahead of a big document's backlog instead of queueing
behind all of it. A key belongs to one tenant; without a tenant every key shares one.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.llm.breaker import CircuitBreaker

SHARED = ""  # the tenant of callers that name none


@dataclass(slots=True)
class _Waiter:
    key: str
    future: asyncio.Future[None]
    priority: int = 0
    tenant: str = SHARED


class InflightScheduler:
    def __init__(self, total: int, per_key: int = 0) -> None:
        if total < 1 or per_key < 0:
            raise ValueError("total must be ≥ 1 and per_key ≥ 0")
        self.total, self.per_key = total, per_key
        self._held: Counter[str] = Counter()
        self._tenant_of: dict[str, str] = {}  # the tenant of each key holding slots
        self._tenant_held: Counter[str] = Counter()
        self._served: dict[str, int] = {}  # tenant -> the turn it was last granted a slot
        self._turn = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_use(self) -> int:
        return self._tenant_held.total()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def held(self, key: str) -> int:
        return self._held[key]

    def _may_take(self, key: str) -> bool:
        return self.in_use < self.total and (self.per_key == 0 or self._held[key] < self.per_key)

    def held_by_tenant(self, tenant: str) -> int:
        return self._tenant_held[tenant]

    def _grant(self, key: str, tenant: str) -> None:
        tenant = self._tenant_of.setdefault(key, tenant)  # a key's slots count for one tenant
        self._held[key] += 1
        self._tenant_held[tenant] += 1
        self._turn += 1
        self._served[tenant] = self._turn

    def _next(self) -> _Waiter | None:
        """The waiter a free slot goes to (None: none may take it): the highest priority, then
        the tenant holding the fewest slots, then the tenant served least recently, then the
        first come; a waiter whose key is at its cap is skipped."""
        best: _Waiter | None = None
        best_rank = (0, 0, 0)
        for waiter in self._waiters:  # called only with a slot free: only the key's cap to check
            if self.per_key and self._held[waiter.key] >= self.per_key:
                continue
            t = waiter.tenant
            rank = (-waiter.priority, self._tenant_held[t], self._served.get(t, 0))
            if best is None or rank < best_rank:
                best, best_rank = waiter, rank
        return best

    def _dispatch(self) -> None:
        """Grant free slots to waiters, one at a time, in `_next`'s order."""
        if any(w.future.done() for w in self._waiters):  # cancelled while waiting
            self._waiters = deque(w for w in self._waiters if not w.future.done())
        while self.in_use < self.total:
            waiter = self._next()
            if waiter is None:
                return
            self._waiters.remove(waiter)
            self._grant(waiter.key, waiter.tenant)
            waiter.future.set_result(None)

    def try_acquire(self, key: str = "", tenant: str = SHARED) -> bool:
        """Take a slot at once if one is free and nobody waits for one (no queue-jumping)."""
        if self._waiters or not self._may_take(key):
            return False
        self._grant(key, tenant)
        return True

    async def acquire(self, key: str = "", priority: int = 0, tenant: str = SHARED) -> None:
        """Wait for a slot; a higher priority (the interactive lane) is served first, then the
        tenants in turn (see the module's doc)."""
        waiter = _Waiter(key, asyncio.get_running_loop().create_future(), priority, tenant)
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
        tenant = self._tenant_of[key]
        self._tenant_held[tenant] -= 1
        if not self._tenant_held[tenant]:
            del self._tenant_held[tenant]
        if not self._held[key]:
            del self._held[key], self._tenant_of[key]
        self._dispatch()

    @asynccontextmanager
    async def slot(self, key: str = "", priority: int = 0, tenant: str = SHARED) -> AsyncIterator[None]:
        await self.acquire(key, priority, tenant)
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
    tenant: str = SHARED,
) -> bool:
    """Hold a slot for ``key`` with the breaker letting a call through, and return True; the
    caller then makes its call with ``breaker.call(fn, waited=True)`` and releases the slot.

    ``tenant``: whose work it is, for the fair share between tenants.

    Returns False, holding nothing, if ``give_up`` is done first: the worker's flow stopped
    for a rebalance or a shutdown while this work was still queued for a slot or waiting out
    an LLM outage, so it can be handed back instead of holding the rebalance up. Free slot
    and closed breaker (the common case): no task and no pass of the event loop.
    """
    holding = sched.try_acquire(key, tenant)
    if holding and breaker.state == "closed":
        return True
    if give_up is not None and give_up.done():
        if holding:
            sched.release(key)
        return False

    async def take() -> None:
        if not holding:
            await sched.acquire(key, priority, tenant)
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
