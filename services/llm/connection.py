"""A worker's connection to its LLM server: the pooled HTTP client, the adapter, the profile.

Built by the bootstrap, opened and closed by the worker's lifecycle service (one place).
"""

from __future__ import annotations

import httpx
import structlog

from services.llm.adapters import build_llm_client, detect_profile
from services.llm.client import LLMClient, Profile
from services.llm.pools import llm_http_client
from services.llm.timeouts import http_timeout
from services.settings import LLMSettings

log = structlog.get_logger(__name__)


class LLMConnection:
    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.profile: Profile = "chat"
        self._http: httpx.AsyncClient | None = None
        self._client: LLMClient | None = None

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            raise RuntimeError("the LLM connection is not open")
        return self._client

    async def open(self) -> None:
        cfg = self.settings
        if not cfg.url:
            raise RuntimeError(
                "DECKSTREAM_LLM_URL is not set: `deckstream up` sets it, or point it at a server"
            )
        self._http = llm_http_client(cfg.max_in_flight, http_timeout(cfg))
        self._client = build_llm_client(self._http, cfg, cfg.url)
        self.profile = (
            cfg.profile if cfg.profile != "auto" else await detect_profile(self._http, cfg.url, cfg.kind)
        )
        log.info("llm ready", url=cfg.url, model=cfg.model, profile=self.profile)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
