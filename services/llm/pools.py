"""An httpx client that stays cheap with many requests in flight to one server.

httpcore's connection pool walks all of its connections on every request start and end, and
hands a freed connection to every queued request (encode/httpcore#1035, encode/httpx#3215):
with 64 requests in flight to an LLM server that cost about 10 ms of CPU per request, more
than the simulated LLM call itself. `ShardedTransport` spreads the connections over several
small pools and sends each request to the least busy one, so each pool's walk stays short.

    http = llm_http_client(max_in_flight=64, timeout=httpx.Timeout(120, connect=5))

Idle connections are dropped after `KEEPALIVE_EXPIRY_S`, well before the servers do: uvicorn
(vLLM, our simulator and API) and llama.cpp's server close a connection idle for 5 s, httpx's
own default. With equal limits a request can go out on a connection the server is closing at
that moment: it never reaches the server and fails with a ReadError, which costs a chunk one
of its attempts (the likely cause of a CI run where a fault test counted 11 calls for 12).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import httpx

POOL_SIZE = 8  # connections per pool: a walk over 8 is cheap, and 8 pools serve 64 in flight
KEEPALIVE_EXPIRY_S = 2.0  # below the 5 s after which uvicorn and llama.cpp close idle connections


class _Released(httpx.AsyncByteStream):
    """A response body that tells its pool's counter when the response is closed."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    """`connections` keep-alive connections as ceil(connections / pool_size) small pools."""

    def __init__(
        self, connections: int, pool_size: int = POOL_SIZE, keepalive_expiry: float = KEEPALIVE_EXPIRY_S
    ) -> None:
        pools = max(1, math.ceil(connections / pool_size))
        per_pool = math.ceil(connections / pools)
        limits = httpx.Limits(
            max_connections=per_pool, max_keepalive_connections=per_pool, keepalive_expiry=keepalive_expiry
        )
        self.pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(pools)]
        self.busy = [0] * pools  # requests whose response is not closed yet, per pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self.pools)), key=self.busy.__getitem__)
        self.busy[i] += 1

        def release() -> None:
            self.busy[i] -= 1

        try:
            response = await self.pools[i].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Released(response.stream, release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


def llm_http_client(max_in_flight: int, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The client for an LLM server: room for max_in_flight requests (and a few spare)."""
    return httpx.AsyncClient(transport=ShardedTransport(max_in_flight + 4), timeout=timeout)
