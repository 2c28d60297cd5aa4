"""Sends what handlers return on the worker's Faust topics."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any

import faust

from services.events.topics import TopicSpec
from services.handlers import Emit, HandBack, Send
from streams import faust_fixes


class Outbox:
    def __init__(self, topics: dict[str, faust.TopicT]) -> None:
        self.topics = topics  # by topic name

    def topic(self, spec: TopicSpec) -> faust.TopicT:
        return self.topics[spec.name]

    async def send(self, item: Send) -> None:
        await self.topic(item.topic).send(key=item.event.document_id, value=item.event)

    async def send_all(self, items: Iterable[Emit], own: faust.TopicT) -> None:
        """Send each item in order; a HandBack goes to `own`, the topic the work came from."""
        for item in items:
            if isinstance(item, HandBack):
                await faust_fixes.hand_back(own, item.event)
            else:
                await self.send(item)

    async def stream(
        self, items: AsyncGenerator[Emit, None], hand_back: Callable[[HandBack], Awaitable[bool]]
    ) -> None:
        """Send what a streaming handler yields, as it yields it. A send that fails is thrown
        back into the handler (which reports it as its own failure); a HandBack that was stored
        (`hand_back` says True) ends the handler."""
        async with aclosing(items):
            item: Any = await anext(items, None)
            while item is not None:
                try:
                    if isinstance(item, HandBack):
                        if await hand_back(item):
                            return
                    else:
                        await self.send(item)
                except Exception as exc:
                    try:
                        item = await items.athrow(exc)
                    except StopAsyncIteration:
                        return
                    continue
                item = await anext(items, None)
