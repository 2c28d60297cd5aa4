"""Replay: reprocess many documents from the log into new generations (`deckstream replay`).

The plan reads documents.uploaded (kept forever: every document's upload and reprocessings) and
jobs.progress (compacted: each document's newest snapshot). Each chosen document whose newest
generation has finished gets its upload again as the next generation; one still running is
skipped with the reason. The watch then follows jobs.progress from before the publishing until
every new generation is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from services.events import topics
from services.events.models import DocumentProgress, DocumentUploaded, Event, decode
from services.handlers.generations import check_overrides, next_generation, why_not_now
from services.storage.blobs import BlobStore


@dataclass(slots=True)
class ReplayPlan:
    uploads: list[DocumentUploaded] = field(default_factory=list)  # to publish, one per document
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (document id, why)


def plan_replay(
    log: Iterable[Event],
    blobs: BlobStore,
    *,
    documents: Collection[str] = (),
    since_ms: int | None = None,
    model: str | None = None,
    prompt_version: str | None = None,
) -> ReplayPlan:
    """Which documents to reprocess, from the uploads and progress read off the log (any order).

    `documents` limits it to those ids; `since_ms` to documents first uploaded at or after it.
    """
    check_overrides(model, prompt_version)
    originals: dict[str, dict[int, DocumentUploaded]] = {}
    newest: dict[str, DocumentProgress] = {}
    for ev in log:
        if isinstance(ev, DocumentUploaded) and ev.is_original:
            originals.setdefault(ev.document_id, {})[ev.generation] = ev
        elif isinstance(ev, DocumentProgress):
            seen = newest.get(ev.document_id)
            if seen is None or ev.generation >= seen.generation:
                newest[ev.document_id] = ev
    plan = ReplayPlan()
    plan.skipped += [(doc, "not in the log") for doc in documents if doc not in originals]
    by_first_upload = sorted(originals.items(), key=lambda item: item[1][min(item[1])].occurred_at)
    for doc, uploads in by_first_upload:
        first = uploads[min(uploads)]
        if (documents and doc not in documents) or (since_ms is not None and first.occurred_at < since_ms):
            continue
        latest = max(uploads)
        why = why_not_now(latest, newest.get(doc))
        if why is None and not blobs.path(first.blob_uri).exists():
            why = "the uploaded file is no longer in the blob store"
        if why is not None:
            plan.skipped.append((doc, why))
            continue
        plan.uploads.append(next_generation(first, latest + 1, model=model, prompt_version=prompt_version))
    return plan


class ProgressWatch:
    """Follows jobs.progress from where it ends at `start()` (call it before publishing)."""

    def __init__(self, bootstrap: str) -> None:
        # A topic and no group: aiokafka assigns every partition (no rebalances, no commits).
        self._consumer = AIOKafkaConsumer(
            topics.PROGRESS.name,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=topics.FETCH_MAX_WAIT_MS,
        )

    async def start(self) -> None:
        await self._consumer.start()
        try:
            tps = list(self._consumer.assignment())
            if not tps:
                raise RuntimeError(f"topic {topics.PROGRESS.name} not found")
            await self._consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the positions now, before anything is published
                await self._consumer.position(tp)
        except BaseException:
            await self._consumer.stop()
            raise

    async def stop(self) -> None:
        await self._consumer.stop()

    async def until_done(
        self,
        wanted: Collection[tuple[str, int]],
        on_event: Callable[[DocumentProgress], None],
        timeout_s: float,
    ) -> dict[str, DocumentProgress]:
        """Each (document, generation)'s events to `on_event` until all are done; their `done`
        snapshots (fewer, if `timeout_s` ran out first)."""
        left, done = set(wanted), {}
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        ev = decode(record.value)
                    except Exception:
                        continue  # counted on pipeline.dlq by the API; nothing to follow here
                    if not isinstance(ev, DocumentProgress) or (ev.document_id, ev.generation) not in left:
                        continue
                    on_event(ev)
                    if ev.kind == "done":
                        left.discard((ev.document_id, ev.generation))
                        done[ev.document_id] = ev
        return done
