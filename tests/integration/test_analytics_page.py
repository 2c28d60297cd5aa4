"""The analytics page in a real browser: once a few documents went through the real stack
(broker, worker, API with its analytics sink; the LLM simulator), an operator signs in on the
documents page with the operator key, follows its Analytics link, and every panel with rows
draws its chart or table, at desktop width and at 390 px, with no error and no sideways scrolling.

Debian's chromium driven by Playwright (never `playwright install`); the screenshots are saved
to artifacts/ before anything is asserted, so a failed run leaves them too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack
from infra.process import wait_until
from tests.conftest import TOKEN, corpus_file

pytestmark = pytest.mark.kafka
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# Two that give cards, and one accepted at upload that fails in extraction (a failure to chart).
DOCUMENTS = ("bee4750_syllabus.docx", "bee4750_hw01_julia-intro.pdf", "pdfjs_GHOSTSCRIPT-698804-1-fuzzed.pdf")
# The panels a user looks at first, by title.
FIRST_LOOK = ("throughput", "tokens per second", "failures by reason", "pages with no cards")
# What those documents must have put in the panels: pages and chunks, LLM calls, one failure.
MUST_HAVE_ROWS = ("throughput", "tokens per second", "failures by reason")

HOUR_MS, DAY_MS = 3600 * 1000, 24 * 3600 * 1000
# Layout shifts recorded from the start (none is expected).
INIT = """window.shifts = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.shifts += e.value;
}).observe({ type: "layout-shift", buffered: true });"""
# Every panel drawn (or found empty, or failed): none is still loading.
SETTLED = """() => {
  const panels = [...document.querySelectorAll("[data-panel]")];
  return panels.length > 0 && panels.every((p) => p.dataset.state && p.dataset.state !== "loading");
}"""
# What each panel shows: its state, caption, the chart's label and its data marks or table rows.
PANELS = """() => [...document.querySelectorAll("[data-panel]")].map((p) => ({
  id: p.dataset.panel,
  state: p.dataset.state,
  caption: p.querySelector("figure > figcaption")?.textContent ?? "",
  label: p.querySelector(".plot svg[role=img]")?.getAttribute("aria-label") ?? "",
  marks: p.querySelectorAll(".plot svg[role=img] .mark").length,
  rows: p.querySelectorAll(".plot table tbody tr").length,
  text: p.querySelector(".plot")?.textContent ?? "",
}))"""


def titled(panels: list[dict[str, Any]], words: str) -> dict[str, Any]:
    found = [p for p in panels if words in p["title"].lower()]
    assert found, f"no panel titled like {words!r} in {[p['title'] for p in panels]}"
    return found[0]


@pytest.fixture(scope="module")
def panels(stack: Stack) -> list[dict[str, Any]]:
    """The panel list, each with the rows the API has for it once the documents are done."""
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        docs = []
        for name in DOCUMENTS:
            r = client.upload(corpus_file(name))
            assert r.status_code == 202, r.text
            docs.append(r.json()["document_id"])
        for doc in docs:
            events = list(client.events(doc, timeout_s=180))
            assert events[-1].event == "done", [e.event for e in events[-5:]]
        listed = client.http.get("/v1/analytics/panels")
        assert listed.status_code == 200, listed.text
        listing: list[dict[str, Any]] = listed.json()["panels"]

        def filled() -> list[dict[str, Any]] | None:
            answers = []
            for p in listing:
                r = client.http.get(f"/v1/analytics/panels/{p['id']}")
                assert r.status_code == 200, r.text
                answers.append({**p, **r.json()})
            wanted = [titled(answers, words) for words in MUST_HAVE_ROWS]
            return answers if all(p["rows"] for p in wanted) else None

        # The sink inserts within about a second of the events.
        return wait_until(filled, 30, interval=0.5, what=f"rows in the panels {MUST_HAVE_ROWS}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"no chromium at {CHROMIUM} (`make` installs Debian's chromium)"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


def open_analytics(browser: Browser, url: str, width: int, height: int) -> tuple[Page, list[str]]:
    """Signed in on the documents page with the operator key (a session cookie: the page never
    holds the key), then the analytics page from its link, loaded until every panel settled."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(INIT)
    page = context.new_page()
    errors: list[str] = []
    # The documents page's session check answers 401 before signing in: Chromium logs that load.
    page.on(
        "console",
        lambda m: (
            errors.append(f"console: {m.text}")
            if m.type == "error" and "status of 401" not in m.text
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(f"{url}/")
    page.get_by_label("an API key").check()
    page.get_by_label("API key", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    link = page.get_by_role("link", name="Analytics")
    expect(link).to_be_visible()  # shown to operators only
    link.click()
    page.wait_for_url(f"{url}/analytics")
    page.wait_for_function(SETTLED, timeout=30_000)
    return page, errors


def span_ms(request: Request) -> int | None:
    """The time range a request for a panel's rows asks for."""
    if "/v1/analytics/panels/" not in request.url:
        return None
    query = parse_qs(urlsplit(request.url).query)
    return int(query["to_ms"][0]) - int(query["from_ms"][0])


def check_panels(shown: list[dict[str, Any]], panels: list[dict[str, Any]]) -> None:
    assert [s["id"] for s in shown] == [p["id"] for p in panels]
    for s, p in zip(shown, panels, strict=True):
        assert s["caption"] == p["title"], s
        assert s["state"] in ("loaded", "empty"), s
        if not p["rows"]:  # it may have got rows since; if not, it says so
            assert s["state"] == "loaded" or "no data yet" in s["text"].lower(), s
            continue
        assert s["state"] == "loaded", s
        if p["kind"] == "table":
            assert s["rows"] > 0, s
        else:
            assert s["marks"] > 0 and p["title"] in s["label"], s


def test_the_analytics_page_charts_every_panel_with_data(
    stack: Stack, panels: list[dict[str, Any]], browser: Browser
) -> None:
    assert stack.api_url is not None
    ARTIFACTS.mkdir(exist_ok=True)
    for words in FIRST_LOOK:
        titled(panels, words)

    page, errors = open_analytics(browser, stack.api_url, 1280, 900)
    page.screenshot(path=ARTIFACTS / "analytics-desktop.png", full_page=True)
    check_panels(page.evaluate(PANELS), panels)

    # Keyboard: a line chart reads out the values at a time with the arrow keys.
    first = titled(panels, "throughput")
    plot = page.locator(f"[data-panel={first['id']}] .plot")
    plot.focus()
    page.keyboard.press("End")
    tip = page.locator(f"[data-panel={first['id']}] .tip")
    assert tip.is_visible() and first["columns"][1].replace("_", " ") in tip.inner_text()

    # The page refreshes by itself every 10 s (the last hour by default), and another range
    # asks the API for that range.
    with page.expect_request(lambda r: span_ms(r) == HOUR_MS, timeout=15_000):
        pass
    with page.expect_request(lambda r: span_ms(r) == DAY_MS):
        page.select_option("#range", "24h")
    page.wait_for_function("() => !document.getElementById('refresh').disabled")  # that refresh is done
    assert errors == []
    assert page.evaluate("window.shifts") == 0, "the panels moved while they loaded"
    page.context.close()


def test_the_analytics_page_fits_a_phone(
    stack: Stack, panels: list[dict[str, Any]], browser: Browser
) -> None:
    assert stack.api_url is not None
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = open_analytics(browser, stack.api_url, 390, 844)
    page.screenshot(path=ARTIFACTS / "analytics-phone.png", full_page=True)
    check_panels(page.evaluate(PANELS), panels)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert errors == []
    assert page.evaluate("window.shifts") == 0, "the panels moved while they loaded"
    page.context.close()
