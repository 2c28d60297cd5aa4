"""The one typed settings tree.

Environment variables use the prefix ``DECKSTREAM_`` and the first ``_`` after it picks the
section, so the documented names work as written: ``DECKSTREAM_KAFKA_BOOTSTRAP``,
``DECKSTREAM_LLM_URL``, ``DECKSTREAM_LLM_MAX_IN_FLIGHT``, ``DECKSTREAM_API_TOKEN``,
``DECKSTREAM_LIMITS_MAX_UPLOAD_BYTES``. Top-level fields have no ``_`` in their names.

Only composition roots (the CLI, the API lifespan, the Faust app) call ``get_settings()``;
adapters take explicit arguments.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "deckstream"


class KafkaSettings(BaseModel):
    # None: use the embedded single-node broker that `deckstream kafka up` starts under home.
    bootstrap: str | None = None
    partitions: int = Field(4, ge=1, description="partitions of every pipeline topic")
    replication: int = Field(1, ge=1)
    heap: str = "512m"
    session_timeout_s: float = Field(10.0, gt=0, description="how soon a dead worker's partitions move")
    bulk_buffer: int = Field(2048, ge=1, description="bulk-lane chunks buffered in a worker")
    track_batch: int = Field(500, ge=1, description="facts the tracker folds into one table write")
    track_within_s: float = Field(0.02, gt=0, description="longest wait to fill a tracker batch")
    reconcile_after_s: float = Field(
        600.0, gt=0, description="a document with no new fact for this long has its missing chunks sent again"
    )
    reconcile_every_s: float = Field(
        10.0, gt=0, description="how often the tracker looks for stalled documents"
    )
    startup_timeout_s: float = 120.0


class LLMSettings(BaseModel):
    # None: start the local llama.cpp server (xllamacpp) with `model`.
    url: str | None = None
    model: Literal["qwen2.5-coder-1.5b", "gemma3-270m"] | str = "qwen2.5-coder-1.5b"
    kind: Literal["openai", "ollama"] = "openai"
    # chat: chat + JSON schema (instruct models); completion: few-shot (base models);
    # auto: ask the server whether the model has a chat template.
    profile: Literal["auto", "chat", "completion"] = "auto"
    api_key: SecretStr | None = None
    max_in_flight: int = Field(4, ge=1, description="LLM requests in flight per worker")
    per_document_in_flight: int = Field(0, ge=0, description="0: no cap per document")
    timeout_s: float = Field(120.0, gt=0, description="the longest an LLM call may take")
    timeout_factor: float = Field(
        3.0,
        ge=0,
        description="a call times out at this many times the server's recent p99 latency; 0: timeout_s",
    )
    min_timeout_s: float = Field(10.0, gt=0, description="the shortest timeout the p99 rule may give")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="LLM calls per chunk within one round")
    retry_rounds: int = Field(4, ge=1, description="rounds through the retry topic before a chunk fails")
    retry_delay_s: float = Field(5.0, ge=0, description="delay before round n is retry_delay_s * 2**(n-1)")
    breaker_threshold: int = Field(
        5, ge=1, description="consecutive unavailable answers that open the breaker"
    )
    breaker_cooldown_s: float = Field(15.0, gt=0)
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    # None: the prompt profile's own (chat: 768 tokens, 0.2; few-shot: 160 tokens, 0.1). The
    # few-shot answer is a short list that a base model repeats until the cap stops it.
    max_tokens: int | None = Field(None, ge=16)
    temperature: float | None = Field(None, ge=0)
    # Local server (xllamacpp): slots and KV cache per slot.
    n_parallel: int = Field(2, ge=1)
    ctx_per_slot: int = 4096
    threads: int = Field(0, ge=0, description="0: all cores")


class CardSettings(BaseModel):
    types: list[Literal["basic", "cloze"]] = ["basic"]
    per_chunk: int = Field(4, ge=1, le=20, description="the most cards asked of one chunk")
    per_1000_words: float = Field(15.0, gt=0, description="target density, so coverage scales with length")
    # v3: cards in the chunk's language, a worked example in it, a retry naming why cards were dropped
    prompt_version: str = "v3"
    # Ask again, with only their text, about pages of a chunk that no kept card cites (v3 on).
    cover_pages: bool = True


class ChunkSettings(BaseModel):
    max_tokens: int = Field(350, ge=32)
    overlap_tokens: int = Field(40, ge=0)
    # Documents up to this many pages (or bytes, when pages are unknown) take the interactive lane.
    interactive_max_pages: int = 40
    interactive_max_bytes: int = 256 * 1024


class LimitSettings(BaseModel):
    max_upload_bytes: int = 100 * 1024 * 1024
    max_pages: int = 2000
    max_zip_entries: int = 5000
    max_uncompressed_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: float = 200.0
    max_image_pixels: int = 50_000_000
    extract_timeout_s: float = 600.0
    check_timeout_s: float = Field(
        30.0, gt=0, description="an upload's check (zip directory, XML prologs, PDF page tree); over it: 422"
    )
    extract_memory_bytes: int = 2 * 1024 * 1024 * 1024
    max_page_chars: int = 100_000
    ocr: bool = True
    ocr_language: str = "eng"


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # None: generated at first start and kept in $DECKSTREAM_HOME/api-token.
    token: SecretStr | None = None
    sse_ping_s: float = 15.0
    max_subscribers: int = 1000


class QuotaSettings(BaseModel):
    """Each tenant's limits, counted per API process; 0: unlimited. The operator's key (the
    bootstrap token) is not held to them. The server-wide cap on event streams is
    ``api.max_subscribers``."""

    uploads_per_minute: int = Field(30, ge=0, description="uploads a tenant may make in any 60 s")
    documents_in_flight: int = Field(20, ge=0, description="a tenant's documents not yet finished")
    pages_per_day: int = Field(5000, ge=0, description="pages of a tenant's documents uploaded in 24 h")
    sse_streams: int = Field(50, ge=0, description="event streams a tenant may hold open at once")


class AccountSettings(BaseModel):
    """Signing in to the web page (``DECKSTREAM_ACCOUNTS_…``)."""

    registration: Literal["closed", "open"] = Field(
        "closed", description="open: anyone may create an account, in a tenant of their own"
    )
    session_hours: float = Field(168.0, gt=0, description="a browser session ends this long after sign-in")
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="mark the session cookie Secure: auto does when the request came over https"
    )
    sign_in_failures: int = Field(
        5,
        ge=1,
        description="failed sign-ins per user name in 15 minutes before 429 (ten times as many per address)",
    )
    share_days: int = Field(7, ge=1, description="a share link's life when none is asked for")
    share_days_max: int = Field(90, ge=1, description="the longest life a share link may be given")


class ClickHouseSettings(BaseModel):
    # None: chDB (in-process ClickHouse) under home/analytics, owned by the API process; else a
    # ClickHouse server, e.g. http://user:password@host:8123.
    url: str | None = None
    database: str = "deckstream"
    enabled: bool = Field(True, description="run the analytics sink in the API process")
    batch_rows: int = Field(2000, ge=1, description="rows that make the sink insert at once")
    flush_s: float = Field(1.0, gt=0, description="longest a consumed event waits for its insert")
    chdb_memory_mb: int = Field(512, ge=64, description="chDB's memory ceiling in the API process")


class WorkerSettings(BaseModel):
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve the worker's Prometheus /metrics here; None: not served"
    )
    metrics_host: str = Field("127.0.0.1", description="the address the worker's /metrics binds")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DECKSTREAM_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    home: Path = Field(default_factory=_default_home)
    tenant: str = "default"
    # The generation of new uploads (a reprocessing takes the next one) and the worker's app id.
    generation: int = Field(1, ge=1)
    kafka: KafkaSettings = KafkaSettings()
    llm: LLMSettings = LLMSettings()
    cards: CardSettings = CardSettings()
    chunks: ChunkSettings = ChunkSettings()
    limits: LimitSettings = LimitSettings()
    api: ApiSettings = ApiSettings()
    quotas: QuotaSettings = QuotaSettings()
    accounts: AccountSettings = AccountSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    worker: WorkerSettings = WorkerSettings()

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def chdb_dir(self) -> Path:
        return self.home / "analytics" / "chdb"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
