"""`deckstream gc`'s choice: what no document of the log uses goes, everything a document uses
stays (its upload, OCR results, cards, ledger, deck and the cached answers its cards came from)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from services.cards.cache import store_cached
from services.documents.decks import collect_cards, store_chunk_cards, store_deck
from services.documents.ledger import store_ledger
from services.domain import Card
from services.events.models import DocumentUploaded, PageInfo
from services.handlers.gc import delete, find_garbage
from services.llm.client import Completion
from services.storage.blobs import LocalBlobStore


def document(store: LocalBlobStore, document_id: str, text: bytes, cache_key: str) -> DocumentUploaded:
    uri, sha, size = store.put_upload(io.BytesIO(text), max_bytes=1 << 20)
    card = Card(f"{document_id}-c", "basic", "What is kept?", "What is used.", "f.txt", 1, "1", (), 0, "v1")
    store_chunk_cards(store, document_id, 1, 0, [card], cache_key)
    store_cached(store, cache_key, Completion("{}", "stop"))
    store_ledger(
        store, document_id, 1, [PageInfo(number=1, label="1", section=[], method="text", chars=9, tokens=2)]
    )
    store_deck(store, document_id, 1, "completed", [card])
    (store.root / "ocr" / sha[:2] / sha).mkdir(parents=True)
    (store.root / "ocr" / sha[:2] / sha / "0001.json").write_text("{}")
    return DocumentUploaded(
        tenant_id="t",
        document_id=document_id,
        generation=1,
        filename="f.txt",
        kind="text",
        size=size,
        sha256=sha,
        blob_uri=uri,
        card_types=["basic"],
        cards_per_chunk=4,
    )


def test_what_no_document_of_the_log_uses_goes_and_the_rest_stays(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    kept = document(store, "kept", b"kept bytes", "a" * 64)
    forgotten = document(store, "forgotten", b"forgotten bytes", "b" * 64)  # a kafka reset forgot it
    store.put_upload(io.BytesIO(b"an upload no document names"), max_bytes=1 << 20)
    store_cached(store, "c" * 64, Completion("{}", "stop"))  # an answer no kept card came from
    crashed = tmp_path / "tmp" / "tmp-crashed"
    crashed.write_bytes(b"half")
    os.utime(crashed, (time.time() - 3 * 24 * 3600,) * 2)

    garbage = find_garbage(store, [kept])
    found = {str(g.path.relative_to(tmp_path)) for g in garbage}
    sha = forgotten.sha256
    assert found == {
        f"sha256/{sha[:2]}/{sha}",
        *(
            f"sha256/{p.parent.name}/{p.name}"
            for p in (tmp_path / "sha256").glob("*/*")
            if p.name not in (sha, kept.sha256)
        ),
        f"ocr/{sha[:2]}/{sha}",
        "cards/forgotten",
        "ledgers/forgotten",
        "decks/forgotten",
        f"cache/cards/bb/{'b' * 64}.json",
        f"cache/cards/cc/{'c' * 64}.json",
        "tmp/tmp-crashed",
    }
    assert all(g.why and g.bytes > 0 for g in garbage)

    assert delete(garbage) == sum(g.bytes for g in garbage)
    assert find_garbage(store, [kept]) == []
    assert store.path(kept.blob_uri).read_bytes() == b"kept bytes"
    assert [c.card_id for c in collect_cards(store, "kept", 1)] == ["kept-c"]
    assert (tmp_path / "cache" / "cards" / "aa" / f"{'a' * 64}.json").exists()
