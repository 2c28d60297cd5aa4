"""The analytics page and its script are served without a token, like `/`; the documents page
links to it. The page itself runs in a browser in tests/integration/test_analytics_page.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.settings import Settings
from tests.conftest import TOKEN


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}})
    # Not entered: these routes need nothing the lifespan starts (no Kafka, no chDB here).
    return TestClient(create_app(settings))


def test_the_analytics_page_is_served_with_its_script(client: TestClient) -> None:
    page = client.get("/analytics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/analytics.js"></script>' in page.text
    assert '<a href="/">Documents</a>' in page.text
    for value in ("1h", "6h", "24h", "7d"):
        assert f'<option value="{value}"' in page.text

    script = client.get("/static/analytics.js")
    assert script.status_code == 200, script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/v1/analytics/panels" in script.text


def test_the_documents_page_links_to_the_analytics_page(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert '<a href="/analytics">Analytics</a>' in page.text
