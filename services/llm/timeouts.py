"""How long an LLM call may take: the client's timeouts, and a call's own from the server's latency."""

from __future__ import annotations

from collections import deque

import httpx

from services.settings import LLMSettings


def http_timeout(settings: LLMSettings) -> httpx.Timeout:
    """The timeouts for the composition root's LLM ``httpx.AsyncClient``."""
    return httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)


class LatencyTimeout:
    """A call's timeout from the server's own latency: ``factor`` times the p99 of its last
    ``window`` answers, within ``floor``..``ceiling``; the ceiling until ``min_samples`` answers
    are in. A hung call on a server that answers in 3 s is given up after ~10 s, not the
    2 minutes a slow CPU server needs, and the same setting suits both.

    A call that timed out counts as one that took the whole timeout: if the server slows down
    for everyone, its timeouts grow with it (by ``factor`` per 1% of calls that time out)
    instead of failing every call. Error answers (429, 5xx) are not latency: they are fast.
    """

    def __init__(
        self, ceiling: float, floor: float, factor: float = 3.0, window: int = 200, min_samples: int = 20
    ) -> None:
        if not 0 < floor <= ceiling or factor <= 0 or min_samples < 1 or window < min_samples:
            raise ValueError("need 0 < floor <= ceiling, factor > 0 and min_samples <= window")
        self.ceiling, self.floor, self.factor, self.min_samples = ceiling, floor, factor, min_samples
        self._recent: deque[float] = deque(maxlen=window)
        self._current = ceiling

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> LatencyTimeout | None:
        if settings.timeout_factor == 0:
            return None  # always timeout_s
        floor = min(settings.min_timeout_s, settings.timeout_s)
        return cls(settings.timeout_s, floor, settings.timeout_factor)

    @property
    def p99(self) -> float | None:
        if len(self._recent) < self.min_samples:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def current(self) -> float:
        """The timeout for the next call, in seconds."""
        return self._current

    def observe(self, seconds: float) -> None:
        """A call's latency (or, for a call that timed out, its timeout)."""
        self._recent.append(seconds)
        p99 = self.p99
        if p99 is not None:
            self._current = min(self.ceiling, max(self.floor, self.factor * p99))
