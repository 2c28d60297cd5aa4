"""A small async circuit breaker in front of the LLM.

    closed ──N consecutive RetryableErrors──► open ──cool-down──► half-open ──probe ok──► closed
                                               ▲                       │
                                               └──────probe fails──────┘

Callers do not fail fast while it is open: ``wait_until_closed()`` (or ``async with
breaker.guard()``) waits out the cool-down, and in half-open lets exactly one probe through
while the others wait for its verdict. Only ``RetryableError`` counts as a failure: a
permanent error means the server answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal, TypeVar

from services.errors import DeckstreamError, RetryableError

T = TypeVar("T")
State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold, self.cooldown_s = failure_threshold, cooldown_s
        self._clock, self._sleep = clock, sleep
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._last_failure: str | None = None
        self._changed = asyncio.Event()

    @property
    def state(self) -> State:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until_closed(self) -> None:
        """Return when a call may go ahead: closed, or this caller is the half-open probe."""
        while True:
            if self._state == "closed":
                return
            if self._state == "open":
                remaining = self._opened_at + self.cooldown_s - self._clock()
                if remaining > 0:
                    await self._sleep(remaining)
                    continue
                self._state = "half-open"
            if not self._probing:
                self._probing = True
                return
            await self._changed.wait()

    def record_success(self) -> None:
        self._failures, self._probing = 0, False
        if self._state != "closed":
            self._state = "closed"
            self._notify()

    @property
    def unavailable(self) -> str | None:
        """Why calls are held back (the latest failure), or None when closed."""
        return None if self._state == "closed" else self._last_failure or "no answer"

    def record_failure(self, reason: str | None = None) -> None:
        self._failures += 1
        self._last_failure = reason
        if self._state == "half-open" or self._failures >= self.failure_threshold:
            self._state, self._opened_at, self._probing = "open", self._clock(), False
            self._notify()

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let another caller probe."""
        if self._probing:
            self._probing = False
            self._notify()

    @asynccontextmanager
    async def guard(self, *, waited: bool = False) -> AsyncIterator[None]:
        """Wait until closed, run the block, record its outcome. ``waited``: the caller has
        just returned from ``wait_until_closed()`` (and may be the half-open probe)."""
        if not waited:
            await self.wait_until_closed()
        try:
            yield
        except RetryableError as exc:
            self.record_failure(exc.reason)
            raise
        except DeckstreamError:
            self.record_success()  # the server answered, if not with what we wanted
            raise
        except BaseException:
            self.release_probe()  # cancelled or a bug of ours: no verdict on the server
            raise
        else:
            self.record_success()

    async def call(self, fn: Callable[[], Awaitable[T]], *, waited: bool = False) -> T:
        """``await fn()`` once a call may go ahead, recording its outcome."""
        async with self.guard(waited=waited):
            return await fn()
