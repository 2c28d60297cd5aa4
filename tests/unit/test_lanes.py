"""The interactive lane is served before the bulk backlog, within the same in-flight cap."""

from __future__ import annotations

import asyncio

from services.llm.scheduler import InflightScheduler


async def test_interactive_waiters_go_before_an_earlier_bulk_backlog() -> None:
    sched = InflightScheduler(total=2)
    order: list[str] = []
    release = asyncio.Event()

    async def job(name: str, priority: int) -> None:
        async with sched.slot(name.split(":")[0], priority):
            order.append(name)
            await release.wait()

    running = [asyncio.create_task(job(f"book:{i}", 0)) for i in range(2)]
    await asyncio.sleep(0)
    backlog = [asyncio.create_task(job(f"book:{i}", 0)) for i in range(2, 6)]
    await asyncio.sleep(0)
    small = asyncio.create_task(job("note:0", 1))
    await asyncio.sleep(0)
    assert order == ["book:0", "book:1"] and sched.in_use == 2
    release.set()
    await asyncio.gather(*running, *backlog, small)
    assert order[2] == "note:0", order
    assert sched.in_use == 0
