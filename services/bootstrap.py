"""The composition root: every port and handler, built from the settings tree in one place.

The worker (streams/app.py), the API (api/app.py), the CLI and the benches build what they run
here. Nothing is opened here: each client is opened and closed by its owner (the worker's
lifecycle service, the API's lifespan).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.accounts.store import KeyStore
from services.analytics.service import Analytics
from services.cards.study import ReviewStore
from services.documents.settled import SettledDocuments
from services.documents.views import DocumentViews
from services.events import topics
from services.events.models import RecordRejected
from services.events.progress_feed import ProgressFeed
from services.events.publisher import EventPublisher, KafkaPublisher
from services.extraction import Sandbox
from services.handlers.pages import PageSource
from services.handlers.sessions import Sessions
from services.handlers.shares import Shares
from services.handlers.split import SplitUpload
from services.handlers.track import DocumentTracker
from services.handlers.upload import AcceptUpload
from services.handlers.write_cards import WriteChunkCards
from services.llm.breaker import CircuitBreaker
from services.llm.connection import LLMConnection
from services.llm.scheduler import InflightScheduler
from services.quotas import Quotas
from services.settings import Settings
from services.storage.api_token import load_or_create_token
from services.storage.blobs import BlobStore, LocalBlobStore


def kafka_bootstrap(settings: Settings) -> str:
    if not settings.kafka.bootstrap:
        raise RuntimeError("DECKSTREAM_KAFKA_BOOTSTRAP is not set (`deckstream up` sets it)")
    return settings.kafka.bootstrap


def blob_store(settings: Settings) -> BlobStore:
    return LocalBlobStore(settings.blob_dir)


def api_token(settings: Settings) -> str:
    """DECKSTREAM_API_TOKEN, or the one kept in home (made at first start)."""
    configured = settings.api.token.get_secret_value() if settings.api.token else None
    return load_or_create_token(settings.home, configured)


@dataclass(slots=True)
class WorkerParts:
    """What a Faust worker runs: its ports and the handlers its agents call."""

    settings: Settings
    bootstrap: str
    blobs: BlobStore
    sandbox: Sandbox
    llm: LLMConnection
    breaker: CircuitBreaker
    scheduler: InflightScheduler
    settled: SettledDocuments
    split: SplitUpload
    write_cards: WriteChunkCards
    tracker: DocumentTracker


def build_worker(settings: Settings) -> WorkerParts:
    cfg = settings.llm
    blobs = blob_store(settings)
    sandbox = Sandbox(settings.limits)
    llm = LLMConnection(cfg)
    breaker = CircuitBreaker(cfg.breaker_threshold, cfg.breaker_cooldown_s)
    scheduler = InflightScheduler(cfg.max_in_flight, cfg.per_document_in_flight)
    settled = SettledDocuments()
    return WorkerParts(
        settings=settings,
        bootstrap=kafka_bootstrap(settings),
        blobs=blobs,
        sandbox=sandbox,
        llm=llm,
        breaker=breaker,
        scheduler=scheduler,
        settled=settled,
        split=SplitUpload(blobs=blobs, sandbox=sandbox, settled=settled, chunks=settings.chunks),
        write_cards=WriteChunkCards(
            llm_settings=cfg,
            card_settings=settings.cards,
            blobs=blobs,
            llm=llm,
            scheduler=scheduler,
            breaker=breaker,
            settled=settled,
        ),
        tracker=DocumentTracker(
            blobs=blobs, breaker=breaker, reconcile_after_s=settings.kafka.reconcile_after_s
        ),
    )


@dataclass(slots=True)
class ApiParts:
    """What an API process serves from: its ports and the handlers its routes call."""

    settings: Settings
    token: str  # the bootstrap token: the default tenant's operator key
    blobs: BlobStore
    publisher: EventPublisher
    feed: ProgressFeed
    views: DocumentViews
    upload: AcceptUpload
    pages: PageSource  # the page beside a card: its text, its image, the passage (same sandbox)
    accounts: KeyStore  # the tenants' API keys, kept up to date by the feed
    quotas: Quotas  # the tenants' limits, counted in this process
    sessions: Sessions  # sign-in, sign-out and registration for the web page
    reviews: ReviewStore  # everyone's study reviews, kept up to date by the feed
    shares: Shares  # read-only share links to decks
    analytics: Analytics | None = None  # the sink and the store's owner (DECKSTREAM_CLICKHOUSE_ENABLED)


def _dead_letter_to(publisher: EventPublisher) -> Callable[[RecordRejected], Awaitable[None]]:
    async def send(letter: RecordRejected) -> None:
        await publisher.publish(topics.DEAD_LETTERS.name, letter)

    return send


def build_api(
    settings: Settings,
    *,
    publisher: EventPublisher | None = None,
    feed: ProgressFeed | None = None,
    analytics: Analytics | None = None,
) -> ApiParts:
    """Tests may pass their own publisher, feed and analytics (their start and stop are still
    called); with a publisher and a feed of their own and no analytics, there are none."""
    if publisher is None or feed is None:
        bootstrap = kafka_bootstrap(settings)
        publisher = publisher or KafkaPublisher(bootstrap)
        feed = feed or ProgressFeed(
            bootstrap, reject=_dead_letter_to(publisher), accounts=KeyStore(settings.tenant)
        )
        if analytics is None and settings.clickhouse.enabled:
            analytics = Analytics(settings.clickhouse, settings.chdb_dir, bootstrap)
    blobs = blob_store(settings)
    sandbox = Sandbox(settings.limits)  # upload checks and pages; the API lifespan starts and stops it
    return ApiParts(
        settings=settings,
        token=api_token(settings),
        blobs=blobs,
        publisher=publisher,
        feed=feed,
        views=feed.views,
        upload=AcceptUpload(
            settings=settings, blobs=blobs, publisher=publisher, views=feed.views, sandbox=sandbox
        ),
        pages=PageSource(blobs=blobs, sandbox=sandbox),
        accounts=feed.accounts,
        reviews=feed.reviews,
        quotas=Quotas(settings.quotas, settings.api.max_subscribers),
        sessions=Sessions(feed.accounts, publisher, settings.accounts, settings.tenant),
        shares=Shares(feed.accounts, feed.views, publisher, settings.accounts),
        analytics=analytics,
    )
