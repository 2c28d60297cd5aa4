"""The web client in a real browser against the real stack (broker, worker, API; the LLM
simulator writes the cards): an account made with the CLI signs in through the form, uploads two
files at once and watches both rows advance and finish, opens a deck while it is written, sees a
card's page with the passage boxed, edits a card (still edited after a reload and an API restart),
studies three cards with the keyboard, downloads the Anki package twice (the same notes), and is
sent back to sign-in once the session is ended elsewhere. Every main screen is checked with
axe-core and photographed at desktop and phone width (artifacts/screenshots/)."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from bench.harness import start_sim
from deckstream.stack import Stack
from infra.llm.sim import SimConfig
from infra.process import terminate, wait_until
from services.cards.anki import BASIC_MODEL_ID, CLOZE_MODEL_ID
from tests.conftest import corpus_file, restart_api, run_cli
from tests.e2e.web import (
    DESKTOP,
    PHONE,
    another_tab,
    layout_shifts,
    no_sideways_scroll,
    open_tab,
    screenshot,
    serious_violations,
    sign_in,
)

pytestmark = pytest.mark.kafka
PDF = "bee4750_hw01_julia-intro.pdf"  # 9 pages: page images, passages boxed on them
DOCX = "bee4750_syllabus.docx"  # no page images: the page's text, the passage marked in it
PASSWORD = "a long enough passphrase"
EDITED = "What does the Julia REPL let you try out? (checked by hand)"
# Every row's stage and counters each time the list changes (a MutationObserver).
WATCH_ROWS = """() => {
  window.rowLog = {};
  const record = () => {
    for (const row of document.querySelectorAll(".doc-row")) {
      const text = (cls) => row.querySelector(cls).textContent;
      const entry = { status: row.dataset.status, pages: text(".pages"), cards: text(".cards"), left: text(".left") };
      const log = (window.rowLog[text(".name")] ||= []);
      if (JSON.stringify(log.at(-1)) !== JSON.stringify(entry)) log.push(entry);
    }
  };
  new MutationObserver(record).observe(document.getElementById("doc-list"),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""
# How many cards the deck list held each time it changed.
WATCH_CARDS = """() => {
  const count = () => document.querySelectorAll("#card-list > li").length;
  window.cardCounts = [count()];
  new MutationObserver(() => { if (count() !== window.cardCounts.at(-1)) window.cardCounts.push(count()); })
    .observe(document.getElementById("card-list"), { childList: true });
}"""


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """Slower than the shared simulator (two slots, 0.5 s a call): the two documents take a few
    seconds, long enough to watch them being written."""
    proc, url = start_sim(SimConfig(latency_s=0.5, capacity=2))
    yield url
    terminate(proc)


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass(frozen=True)
class Made:
    """What the upload left: the session (cookie), each file's document id, and what the
    documents tab and the deck tab showed while the two were written."""

    state: Any
    docs: dict[str, str]
    rows: dict[str, list[dict[str, str]]]
    card_counts: list[int]
    shifts: dict[str, tuple[float, list[str]]]  # by tab: the score, and what moved
    errors: list[str]


def api(stack: Stack) -> str:
    assert stack.api_url is not None
    return stack.api_url


def cookie_client(stack: Stack, state: Any) -> httpx.Client:
    """The API as the browser's session sees it (GETs only: no CSRF header needed)."""
    cookies = {c["name"]: c["value"] for c in state["cookies"]}
    return httpx.Client(base_url=api(stack), cookies=cookies, timeout=30)


def deck_of(stack: Stack, made: Made, name: str) -> dict[str, Any]:
    with cookie_client(stack, made.state) as http:
        r = http.get(f"/v1/decks/{made.docs[name]}")
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def account(stack: Stack) -> Account:
    """A tenant and an account in it, made with the CLI as an operator does."""
    suffix = uuid.uuid4().hex[:6]
    tenant, username = f"school-{suffix}", f"ada-{suffix}"
    made = run_cli(stack, "tenants", "add", tenant, timeout_s=120)
    assert made.returncode == 0, made.stderr
    added = run_cli(stack, "users", "add", tenant, username, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    # The API reads the accounts topic live: the account counts within a second. Few tries, far
    # apart: failed sign-ins count towards the address's limit.
    with httpx.Client(timeout=10) as http:
        wait_until(
            lambda: (
                http.post(
                    f"{api(stack)}/v1/auth/session", json={"username": username, "password": PASSWORD}
                ).status_code
                == 200
            ),
            2.0,
            interval=0.4,
            what="the new account to sign in",
        )
    return Account(username, PASSWORD)


def row(page: Page, name: str) -> Any:
    return page.locator(".doc-row", has=page.get_by_role("heading", name=name, exact=True))


@pytest.fixture(scope="module")
def made(stack: Stack, browser: Browser, account: Account) -> Iterator[Made]:
    """Sign in, drop two files at once (basic and cloze cards), open the PDF's deck in a second
    tab while it is written, and wait until both documents are done."""
    tab = open_tab(browser)
    page = tab.page
    sign_in(page, api(stack), account.username, account.password)
    page.evaluate(WATCH_ROWS)
    page.get_by_label("cloze (fill in the blank)").check()
    page.locator("#file-input").set_input_files([corpus_file(PDF), corpus_file(DOCX)])
    expect(page.locator(".doc-row")).to_have_count(2)

    opening = row(page, PDF).get_by_role("link", name="Open deck")
    expect(opening).to_be_visible(timeout=30_000)
    deck_tab = another_tab(tab)
    deck_tab.page.goto(f"{api(stack)}/{opening.get_attribute('href')}")
    deck_tab.page.evaluate(WATCH_CARDS)
    # The rows while cards are being written, for people to look at (asserted on below).
    expect(page.locator(".doc-row[data-status=generating]").first).to_be_visible(timeout=60_000)
    screenshot(page, "documents-writing-desktop")

    for name in (PDF, DOCX):
        expect(row(page, name)).to_have_attribute("data-status", "completed", timeout=120_000)
    expect(deck_tab.page.locator("#deck-status")).to_contain_text("Completed", timeout=30_000)
    docs = {name: str(row(page, name).get_attribute("data-document")) for name in (PDF, DOCX)}
    # Each deck is assembled just after its document is done; then each row counts its cards.
    with cookie_client(stack, page.context.storage_state()) as http:
        decks: dict[str, Any] = {}
        for name, doc in docs.items():
            decks[name] = wait_until(
                lambda doc=doc: (d := http.get(f"/v1/decks/{doc}").json())["complete"] and d,
                30,
                interval=0.2,
                what=f"the deck of {name}",
            )
    for name in (PDF, DOCX):
        expect(row(page, name).locator(".cards")).to_have_text(str(len(decks[name]["cards"])))
    result = Made(
        state=page.context.storage_state(),
        docs=docs,
        rows=page.evaluate("window.rowLog"),
        card_counts=deck_tab.page.evaluate("window.cardCounts"),
        shifts={"documents": layout_shifts(page), "deck": layout_shifts(deck_tab.page)},
        errors=tab.errors + deck_tab.errors,
    )
    # The deck tab's final list: every card of the deck the API assembled.
    expect(deck_tab.page.locator("#card-list > li")).to_have_count(len(decks[PDF]["cards"]))
    yield result
    page.context.close()


def test_two_files_uploaded_at_once_advance_live_and_finish(made: Made, stack: Stack) -> None:
    assert made.errors == []
    for name, pages in ((PDF, "page 9/9"), (DOCX, None)):
        log = made.rows[name]
        statuses = list(dict.fromkeys(e["status"] for e in log))
        assert statuses[0] in ("uploading", "queued") and statuses[-1] == "completed", statuses
        assert "generating" in statuses, statuses  # seen writing cards, not only done
        # Counted up live (once done, the deck may hold fewer: near-duplicates are left out).
        cards = [int(e["cards"]) for e in log if e["cards"].isdigit() and e["status"] != "completed"]
        assert cards == sorted(cards) and len({c for c in cards if c > 0}) >= 2, cards
        assert int(log[-1]["cards"]) == len(deck_of(stack, made, name)["cards"])
        assert log[-1]["pages"] == (pages or log[-1]["pages"]) and log[-1]["pages"].startswith("page ")
        lefts = {e["left"] for e in log}
        assert "estimating…" in lefts, lefts  # before the pace is measured
        assert any(t.startswith("about ") or t == "almost done" for t in lefts), lefts  # then from it
    assert made.shifts["documents"][0] == 0, made.shifts["documents"]  # the rows never moved


def test_a_deck_fills_in_while_written_and_shows_each_cards_page(
    made: Made, stack: Stack, browser: Browser
) -> None:
    # The deck tab, opened while the PDF was being written, got its cards as they came.
    grown = [n for n in made.card_counts if n > 0]
    peak = grown.index(max(grown))
    assert len(grown) >= 2 and grown[: peak + 1] == sorted(grown[: peak + 1]), made.card_counts
    assert made.shifts["deck"][0] == 0, made.shifts["deck"]  # nothing moved as cards came
    # Once assembled, the deck leaves out near-duplicates: the list ends at the deck's cards.
    deck = deck_of(stack, made, PDF)
    assert grown[-1] == len(deck["cards"]), made.card_counts
    assert max(grown) - grown[-1] == deck["quality"]["duplicates_removed"], made.card_counts

    tab = open_tab(browser, storage_state=made.state)
    page = tab.page
    page.goto(f"{api(stack)}/#/deck/{made.docs[PDF]}")
    cards = page.locator("#card-list > li")
    expect(cards).to_have_count(len(deck["cards"]))
    expect(page.locator("#deck-status")).to_contain_text("Completed")
    expect(page.locator("#ledger-summary")).to_contain_text("of 9")

    # Filters: cloze cards only (the upload asked for both kinds), then one page's cards.
    assert {c["type"] for c in deck["cards"]} == {"basic", "cloze"}
    page.locator("#filter-type").select_option("cloze")
    shown = page.locator("#card-list > li:not([hidden])")
    expect(shown.first).to_be_visible()
    assert set(shown.evaluate_all("(els) => els.map((e) => e.dataset.type)")) == {"cloze"}
    page.locator("#filter-type").select_option("")
    page.locator("#filter-page").select_option(label="page 2")
    wanted = sum(1 for c in deck["cards"] if c["source"]["page"] == 2)
    expect(shown).to_have_count(wanted)
    for text in shown.locator(".src").all_inner_texts():
        assert "page 2 " in text + " ", text
    page.locator("#filter-page").select_option("")

    # A card's source: its page as an image, the supporting passage boxed on it.
    first = cards.first
    first.get_by_role("button", name="Source").click()
    image = page.locator("#source-pane .page-frame img")
    expect(image).to_be_visible()
    assert image.evaluate("(img) => img.complete && img.naturalWidth > 0")
    boxes = page.locator("#source-pane .highlight")
    expect(boxes.first).to_be_attached()
    frame = image.bounding_box()
    assert frame is not None
    for box in boxes.all():
        b = box.bounding_box()
        assert b is not None and b["width"] > 0 and b["height"] > 0
        assert frame["x"] - 1 <= b["x"] and b["x"] + b["width"] <= frame["x"] + frame["width"] + 1
        assert frame["y"] - 1 <= b["y"] and b["y"] + b["height"] <= frame["y"] + frame["height"] + 1
    expect(page.locator("#source-pane .passage")).to_be_visible()

    # A Word document has no page images: the page's text, the passage marked in it.
    page.goto(f"{api(stack)}/#/deck/{made.docs[DOCX]}")
    expect(page.locator("#deck-title")).to_have_text(DOCX)
    page.locator("#card-list > li").first.get_by_role("button", name="Source").click()
    expect(page.locator("#source-pane .page-text")).to_be_visible()
    expect(page.locator("#source-pane .page-text mark")).to_be_visible()
    assert page.locator("#source-pane img").count() == 0
    assert tab.errors == []
    page.context.close()


def test_an_edit_shows_after_a_reload_and_after_an_api_restart(
    made: Made, stack: Stack, browser: Browser
) -> None:
    tab = open_tab(browser, storage_state=made.state)
    page = tab.page
    page.goto(f"{api(stack)}/#/deck/{made.docs[PDF]}")
    first = page.locator("#card-list > li").first
    expect(first).to_be_visible()
    card_id = first.get_attribute("data-card")
    first.get_by_role("button", name="Edit").click()
    page.get_by_role("textbox", name="Front").fill(EDITED)
    page.get_by_role("textbox", name="Tags").fill("julia repl")
    page.get_by_role("button", name="Save").click()
    card = page.locator(f"#card-list > li[data-card='{card_id}']")
    expect(card.locator(".front")).to_have_text(EDITED)
    expect(card.locator(".tag")).to_have_text(["julia", "repl"])

    page.reload()
    expect(card.locator(".front")).to_have_text(EDITED)

    # A new API process (on a new port) reads the edit back from its topic; cookies are not
    # bound to a port, so the session goes on.
    assert tab.errors == []
    restart_api(stack)
    page.goto(f"{api(stack)}/#/deck/{made.docs[PDF]}")
    expect(card.locator(".front")).to_have_text(EDITED)
    expect(card.locator(".tag")).to_have_text(["julia", "repl"])
    # Only the old page's event stream, failing to reach the stopped API before it was left.
    assert all("ERR_CONNECTION_REFUSED" in e for e in tab.errors), tab.errors
    page.context.close()


def test_cards_are_added_settled_and_deleted_and_the_deck_shared(
    made: Made, stack: Stack, browser: Browser
) -> None:
    tab = open_tab(browser, storage_state=made.state)
    page = tab.page
    page.goto(f"{api(stack)}/#/deck/{made.docs[DOCX]}")
    cards = page.locator("#card-list > li")
    expect(cards.first).to_be_visible()
    before = cards.count()

    # A card of one's own, citing page 2.
    page.get_by_text("Add a card").click()
    added = page.locator("#add-form")
    added.get_by_role("textbox", name="Front").fill("Who teaches BEE 4750?")
    added.get_by_role("textbox", name="Back").fill("The instructor named in the syllabus")
    added.get_by_role("spinbutton", name="Page it cites").fill("2")
    added.get_by_role("button", name="Add the card").click()
    expect(cards).to_have_count(before + 1)
    mine = cards.filter(has_text="Who teaches BEE 4750?")
    expect(mine.locator(".src")).to_contain_text("page")

    # Deleted in two presses (the first asks).
    mine.get_by_role("button", name="Delete").click()
    mine.get_by_role("button", name="Delete it for good").click()
    expect(cards).to_have_count(before)

    # A card marked to check, if the deck has one: kept, it loses the mark.
    page.locator("#filter-check").check()
    marked = page.locator("#card-list > li.to-check:not([hidden])")
    if marked.count():
        card_id = marked.first.get_attribute("data-card")
        marked.first.get_by_role("button", name="Keep it").click()
        expect(page.locator(f"#card-list > li[data-card='{card_id}']")).not_to_have_class("to-check")
    page.locator("#filter-check").uncheck()

    # A read-only link: shown once, opens the deck for anyone, stops when revoked.
    page.get_by_text("Share a read-only link").click()
    page.get_by_role("textbox", name="Label").fill("study group")
    page.get_by_role("button", name="Create a link").click()
    link = page.locator("#share-url")
    expect(link).to_have_value(re.compile(r"/shared/"))
    url = link.input_value()
    stranger = open_tab(browser)
    stranger.page.goto(url)
    expect(stranger.page.get_by_role("heading", level=1)).to_have_text(DOCX)
    expect(stranger.page.locator("#cards > li")).to_have_count(before)
    shares = page.locator("#share-table tbody tr")
    expect(shares).to_have_count(1)
    expect(shares.first).to_contain_text("active")
    shares.first.get_by_role("button", name="Revoke").click()
    expect(shares.first).to_contain_text("revoked")
    stranger.page.reload()
    expect(stranger.page.locator("#meta")).to_contain_text("revoked")
    assert tab.errors == []
    stranger.page.context.close()
    page.context.close()


def test_three_cards_studied_with_the_keyboard(made: Made, stack: Stack, browser: Browser) -> None:
    total = len(deck_of(stack, made, PDF)["cards"])
    tab = open_tab(browser, storage_state=made.state)
    page = tab.page
    page.goto(f"{api(stack)}/#/study")
    deck_row = page.locator(f"#study-table tr[data-deck='{made.docs[PDF]}']")
    expect(deck_row.locator("td").nth(0)).to_have_text(str(total))  # all new
    deck_row.get_by_role("link", name="Study").click()

    front, answer = page.locator("#study-front"), page.locator("#study-answer")
    for done in range(1, 4):
        expect(front).not_to_be_empty()
        expect(answer).to_be_hidden()
        page.keyboard.press("Space")
        expect(answer).to_be_visible()
        expect(page.locator("#study-back")).not_to_be_empty()
        page.keyboard.press("3")  # good
        expect(page.locator("#study-counts")).to_contain_text(
            f"{done} card{'s' if done > 1 else ''} studied now"
        )

    page.goto(f"{api(stack)}/#/study")
    cells = deck_row.locator("td")
    expect(cells.nth(0)).to_have_text(str(total - 3))  # new
    expect(cells.nth(1)).to_have_text("3")  # learning: the three just studied
    assert tab.errors == []
    page.context.close()


def open_apkg(path: Path) -> tuple[dict[int, Any], list[tuple[str, int, str]]]:
    """The note types and the notes (GUID, note type, fields) of an Anki package, with sqlite3."""
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
        db = z.read("collection.anki2")
    with tempfile.TemporaryDirectory() as folder:
        collection = Path(folder) / "collection.anki2"
        collection.write_bytes(db)
        con = sqlite3.connect(collection)
        try:
            (models,) = con.execute("SELECT models FROM col").fetchone()
            notes = con.execute("SELECT guid, mid, flds FROM notes ORDER BY guid").fetchall()
        finally:
            con.close()
    return {int(k): v for k, v in json.loads(models).items()}, notes


def test_the_anki_package_downloads_with_the_same_notes_every_time(
    made: Made, stack: Stack, browser: Browser
) -> None:
    cards = deck_of(stack, made, PDF)["cards"]
    tab = open_tab(browser, storage_state=made.state)
    page = tab.page
    page.goto(f"{api(stack)}/#/deck/{made.docs[PDF]}")
    expect(page.locator("#card-list > li")).to_have_count(len(cards))
    packages = []
    for _ in range(2):
        with page.expect_download() as download:
            page.get_by_role("link", name="Anki (.apkg)").click()
        assert download.value.suggested_filename == "bee4750_hw01_julia-intro.apkg"
        packages.append(open_apkg(Path(download.value.path())))
    (models, notes), (models_again, notes_again) = packages
    # The same two note types (by id, name, kind and fields; their timestamps are the export's).
    shape = {mid: (m["name"], m["type"], [f["name"] for f in m["flds"]]) for mid, m in models.items()}
    assert shape == {
        mid: (m["name"], m["type"], [f["name"] for f in m["flds"]]) for mid, m in models_again.items()
    }
    assert set(shape) == {BASIC_MODEL_ID, CLOZE_MODEL_ID} and shape[CLOZE_MODEL_ID][1] == 1  # 1: cloze
    assert len(notes) == len(cards) and len({guid for guid, _, _ in notes}) == len(cards)
    assert notes == notes_again  # the same GUIDs: a re-import updates the notes, adds none
    assert {mid for _, mid, _ in notes} == {BASIC_MODEL_ID, CLOZE_MODEL_ID}
    assert any(EDITED in fields for _, _, fields in notes)  # the package has the edit
    assert tab.errors == []
    page.context.close()


def test_a_session_ended_elsewhere_sends_the_page_back_to_sign_in(
    stack: Stack, browser: Browser, account: Account
) -> None:
    first = open_tab(browser)
    page = first.page
    page.goto(f"{api(stack)}/")
    # Registration is closed on this server: the page says so.
    page.get_by_role("button", name="Create an account").click()
    register = page.locator("#register-form")
    register.get_by_role("textbox", name="User name").fill(f"someone-{uuid.uuid4().hex[:6]}")
    register.get_by_role("textbox", name="Password").fill("another long passphrase")
    register.get_by_role("button", name="Create the account").click()
    expect(register.get_by_role("alert")).to_contain_text("does not take new accounts")
    register.get_by_role("button", name="Back to sign in").click()

    sign_in(page, api(stack), account.username, account.password)
    expect(page.get_by_role("link", name="Analytics")).to_be_hidden()  # operators only
    # The same session in another window, signed out there.
    second = open_tab(browser, storage_state=page.context.storage_state())
    second.page.goto(f"{api(stack)}/")
    second.page.get_by_role("button", name="Sign out").click()
    expect(second.page.locator("#signin-notice")).to_have_text("You are signed out.")

    page.get_by_role("link", name="Study", exact=True).click()
    expect(page.locator("#signin-notice")).to_have_text("Your session has ended: sign in again.")
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    sign_in(page, api(stack), account.username, account.password)
    assert first.errors == [] and second.errors == []
    page.context.close()
    second.page.context.close()


def test_an_expired_session_sends_the_page_back_to_sign_in(
    stack: Stack, browser: Browser, account: Account
) -> None:
    """Sessions here last five seconds: the page, used after that, asks for a sign-in."""
    lasts = stack.settings.accounts.session_hours
    stack.settings.accounts.session_hours = 5 / 3600
    restart_api(stack)
    try:
        tab = open_tab(browser)
        page = tab.page
        sign_in(page, api(stack), account.username, account.password)
        form = page.locator("#signin-form")

        def back_at_sign_in() -> bool:
            """Use the page (each screen asks the API), until it shows the sign-in form."""
            for screen in ("Study", "Documents"):
                if form.is_visible():
                    return True
                link = page.get_by_role("link", name=screen, exact=True)
                try:  # the link goes as the page turns to sign-in: that is the answer, not a failure
                    link.click(timeout=2000)
                except PlaywrightTimeoutError:
                    pass
            return form.is_visible()

        wait_until(back_at_sign_in, 30, interval=0.5, what="the expired session to send the page to sign-in")
        expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
        page.context.close()
    finally:
        stack.settings.accounts.session_hours = lasts
        restart_api(stack)


def test_the_page_is_served_fresh_with_its_own_scripts_only(stack: Stack) -> None:
    """The page and its modules come from the API, revalidated on every load (an upgrade shows
    at once), with their types; the page runs no script but its own files."""
    page = httpx.get(f"{api(stack)}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' rules
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path, kind in (("/static/js/main.js", "text/javascript"), ("/static/app.css", "text/css")):
        r = httpx.get(f"{api(stack)}{path}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), (path, r.headers)
        assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
        again = httpx.get(f"{api(stack)}{path}", headers={"If-None-Match": r.headers["etag"]}, timeout=10)
        assert again.status_code == 304


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_screen_is_accessible_and_photographed(
    size: str, made: Made, stack: Stack, browser: Browser, account: Account
) -> None:
    """Sign-in, documents, a deck with a card's page open, a study card with its answer: each
    saved as artifacts/screenshots/<screen>-<size>.png, then checked with axe-core (no serious
    or critical violation) and for sideways scrolling."""
    tab = open_tab(browser, viewport=DESKTOP if size == "desktop" else PHONE, bypass_csp=True)
    page = tab.page
    found: dict[str, list[str]] = {}

    def look(screen: str) -> None:
        screenshot(page, f"{screen}-{size}")
        found[screen] = serious_violations(page)
        no_sideways_scroll(page)

    page.goto(f"{api(stack)}/")
    expect(page.locator("#signin-form")).to_be_visible()
    look("sign-in")

    sign_in(page, api(stack), account.username, account.password)
    expect(page.locator(".doc-row[data-status=completed]")).to_have_count(2)
    look("documents")

    page.goto(f"{api(stack)}/#/deck/{made.docs[PDF]}")
    card = page.locator("#card-list > li").nth(1)
    card.get_by_role("button", name="Source").click()
    expect(page.locator("#source-pane .page-frame img")).to_be_visible()
    if size == "phone":  # the page is under the card: show both
        card.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    else:  # the deck's head, its first cards, and the page beside them
        page.evaluate("window.scrollTo(0, 0)")
    look("deck")

    page.goto(f"{api(stack)}/#/study/{made.docs[DOCX]}")
    expect(page.locator("#study-front")).not_to_be_empty()
    page.keyboard.press("Space")
    expect(page.locator("#study-answer")).to_be_visible()
    look("study")

    bad = {screen: lines for screen, lines in found.items() if lines}
    assert not bad, "axe-core found:\n" + "\n".join(f"{s}: {line}" for s, ls in bad.items() for line in ls)
    assert tab.errors == []
    page.context.close()


def test_a_page_without_a_card_says_why_and_what_to_do(
    stack: Stack, browser: Browser, account: Account, sim_url: str
) -> None:
    """The model answers nonsense twice, so the only chunk of a one-page text fails: the deck's
    ledger says why its page has no card, and that the failed chunk can be retried."""
    name = "chardet_windows-1252_german_ude_1.txt"
    httpx.post(f"{sim_url}/admin/faults", json={"garbage_rate": 1.0}, timeout=5).raise_for_status()
    tab = open_tab(browser)
    page = tab.page
    try:
        sign_in(page, api(stack), account.username, account.password)
        page.locator("#file-input").set_input_files([corpus_file(name)])
        expect(row(page, name)).to_have_attribute("data-status", "failed", timeout=60_000)
    finally:
        httpx.post(f"{sim_url}/admin/faults", json={"garbage_rate": 0.0}, timeout=5).raise_for_status()
    page.goto(f"{api(stack)}/#/deck/{row(page, name).get_attribute('data-document')}")
    expect(page.locator("#ledger-summary")).to_contain_text("Pages that gave no card: 1 of 1")
    page.locator("#ledger-summary").click()
    why = page.locator("#ledger-table tbody tr").first
    expect(why).to_contain_text(re.compile(r"its chunk failed: .*json", re.IGNORECASE))
    expect(why).to_contain_text("retry the failed chunks")
    screenshot(page, "deck-ledger-desktop")
    assert tab.errors == []
    page.context.close()
