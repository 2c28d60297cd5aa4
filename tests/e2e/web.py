"""Driving the web client in Debian's chromium with Playwright (never `playwright install`): a
page per browser context, signing in through the form, axe-core's accessibility check, and the
screenshots every run leaves under artifacts/screenshots/."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Layout shifts the user did not cause, summed from the page's first paint on (none is
# expected), and what moved, to say so when one happens.
SHIFTS = """window.shifts = 0;
window.shifted = [];
const named = (n) => n && n.nodeType === 1 ? `${n.tagName.toLowerCase()}#${n.id}.${n.className}` : String(n && n.nodeName);
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.hadRecentInput) continue;
    window.shifts += e.value;
    for (const s of e.sources) {
      const [a, b] = [s.previousRect, s.currentRect];
      window.shifted.push(`${named(s.node)} at ${Math.round(e.startTime)} ms: ${[a.x, a.y, a.width, a.height].map(Math.round)} -> ${[b.x, b.y, b.width, b.height].map(Math.round)}`);
    }
  }
}).observe({ type: "layout-shift", buffered: true });"""
# Refusals the page expects and shows (not signed in at load, a session ended, registration
# closed) are logged by Chromium as failed loads.
EXPECTED_CONSOLE = tuple(
    f"Failed to load resource: the server responded with a status of {status}" for status in (401, 403)
)


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)


def open_tab(
    browser: Browser,
    *,
    viewport: dict[str, int] = DESKTOP,
    storage_state: Any = None,
    bypass_csp: bool = False,
) -> Tab:
    """A page in a context of its own. `bypass_csp`: to inject axe-core, which the page's
    Content-Security-Policy would refuse as an inline script (as it should)."""
    context = browser.new_context(
        viewport=viewport, accept_downloads=True, storage_state=storage_state, bypass_csp=bypass_csp
    )
    context.add_init_script(SHIFTS)
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda e: tab.errors.append(f"page error: {e}"))
    tab.page.on(
        "console",
        lambda m: (
            tab.errors.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") and not m.text.startswith(EXPECTED_CONSOLE)
            else None
        ),
    )
    return tab


def another_tab(tab: Tab) -> Tab:
    """A second page in the same context (the same cookie), as a user opens a second tab."""
    other = Tab(tab.page.context.new_page())
    other.page.on("pageerror", lambda e: other.errors.append(f"page error: {e}"))
    return other


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    """Through the form, as a person does; ends on the documents screen."""
    page.goto(f"{base}/")
    form = page.locator("#signin-form")
    expect(form).to_be_visible()
    form.get_by_role("textbox", name="User name").fill(username)
    form.get_by_role("textbox", name="Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Your documents", level=1)).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path)
    return path


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is, one readable line each
    (the rule, its impact, what it says and the first elements it found)."""
    assert AXE.exists(), f"no {AXE}: run `make install` (npm ci --prefix tests/e2e)"
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=AXE)
    result = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    lines = []
    for v in result["violations"]:
        if v["impact"] not in ("serious", "critical"):
            continue
        targets = [json.dumps(n["target"]) for n in v["nodes"][:4]]
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(targets)}")
    return lines


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size
    assert viewport is not None and width <= viewport["width"], f"{width}px wide in {viewport}"


def layout_shifts(page: Page) -> tuple[float, list[str]]:
    """The page's layout shift score so far, and what moved."""
    return page.evaluate("window.shifts"), page.evaluate("window.shifted")
