"""A document's page ledger, kept as one blob once its extraction has ended: every page with its
label, section, size, method and why it gave no text.

The splitter writes it (it reads every page, also when it resumes a handed-back upload); the API
serves it once a document's live history is no longer kept in memory or in the log.
"""

from __future__ import annotations

from services.events.models import PageInfo
from services.storage.blobs import SCHEME, BlobStore


def _key(document_id: str, generation: int) -> str:
    return f"ledgers/{document_id}/g{generation}.json"


def store_ledger(blobs: BlobStore, document_id: str, generation: int, pages: list[PageInfo]) -> str:
    return blobs.put_json(_key(document_id, generation), [p.model_dump() for p in pages])


def load_ledger(blobs: BlobStore, document_id: str, generation: int) -> list[PageInfo] | None:
    """The ledger, or None while the document's extraction has not ended."""
    path = blobs.path(SCHEME + _key(document_id, generation))
    if not path.exists():
        return None
    return [PageInfo.model_validate(p) for p in blobs.get_json(SCHEME + _key(document_id, generation))]
