"""/metrics of a live stack (real broker, Faust worker, llama.cpp with Gemma 3 270M, API): the
worker on DECKSTREAM_WORKER_METRICS_PORT, the API on its own port, each read from its process."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_stack
from infra.process import free_port, wait_until
from services.events import topics
from tests.conftest import corpus_file, stack_settings

pytestmark = [pytest.mark.kafka, pytest.mark.llm]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, llm_url: str) -> Iterator[Stack]:
    settings = stack_settings(
        tmp_path_factory.mktemp("metrics"), kafka_bootstrap, llm_url, worker={"metrics_port": free_port()}
    )
    st = start_stack(settings, api=True)
    yield st
    st.stop()


def lags(url: str) -> dict[str, dict[tuple[str, int], float]]:
    """deckstream_consumer_lag of one process: consumer -> (topic, partition) -> lag."""
    r = httpx.get(url, timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "deckstream_consumer_lag":
                found[s.labels["consumer"]][(s.labels["topic"], int(s.labels["partition"]))] = s.value
    return found


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(url, timeout=5).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_each_process_shows_its_llm_calls_and_consumer_lag_drained_after_a_document(
    stack: Stack, client: DeckstreamClient
) -> None:
    worker = f"http://127.0.0.1:{stack.settings.worker.metrics_port}/metrics"
    assert stack.worker_metrics == {"worker": worker}
    assert stack.api_url is not None
    api = f"{stack.api_url}/metrics"
    assert samples(worker, "deckstream_llm_in_flight") == {(): 0}
    assert samples(worker, "deckstream_llm_breaker_state")[(("state", "closed"),)] == 1
    assert samples(worker, "process_resident_memory_bytes")[()] > 0

    r = client.upload(corpus_file("unstructured_fake-text-utf-16-le-bom.txt"), filename="metrics.txt")
    assert r.status_code == 202, r.text
    doc = r.json()["document_id"]
    events = list(client.events(doc, timeout_s=300))
    assert events[-1].event == "done"

    partitions = stack.settings.kafka.partitions
    chunk_topics = (topics.CHUNKS.name, topics.CHUNKS_INTERACTIVE.name)

    def worker_drained() -> bool:
        chunk_lags = {tp: lag for tp, lag in lags(worker)["worker"].items() if tp[0] in chunk_topics}
        # every partition of both lanes fetched (a highwater known), and every chunk committed
        return len(chunk_lags) == 2 * partitions and not any(chunk_lags.values())

    wait_until(worker_drained, 30, interval=0.5, what="the worker's chunk lag to drain to 0")

    def feed_caught_up() -> bool:
        feed = lags(api)["api-feed"]
        return {p for t, p in feed if t == topics.PROGRESS.name} == set(range(partitions)) and not any(
            feed.values()
        )

    wait_until(feed_caught_up, 30, interval=0.5, what="the API feed's lag on jobs.progress to be 0")
    by_status = {dict(k)["status"]: v for k, v in samples(api, "deckstream_documents").items()}
    assert by_status[client.status(doc)["status"]] >= 1  # the broker may hold other tests' documents
