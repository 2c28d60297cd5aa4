// Beside a deck's cards: its downloads, its read-only share links, and the page ledger (the
// pages that gave no card, and why).

import { api } from "./api.js";
import { $, clear, el } from "./dom.js";
import { when } from "./format.js";

let documentId = null;

export function open(id) {
  documentId = id;
  const base = `/v1/decks/${encodeURIComponent(id)}`;
  // Same-origin links: the browser sends the session cookie; no token is ever in a URL.
  $("export-apkg").href = `${base}?format=apkg`;
  $("export-csv").href = `${base}?format=csv`;
  $("export-json").href = `${base}?format=json`;
  $("deck-study").href = `#/study/${encodeURIComponent(id)}`;
  $("share-made").hidden = true;
  $("share-url").value = "";
  $("share-error").textContent = "";
  clear($("share-table").tBodies[0]);
  clear($("ledger-table").tBodies[0]);
  $("ledger-summary").textContent = "Pages that gave no card";
  for (const id of ["share-panel", "ledger-panel", "add-panel"]) $(id).open = false;
}

export function close() {
  documentId = null;
}

// ---- share links ----

async function listShares() {
  const id = documentId;
  try {
    const links = await api(`/v1/decks/${encodeURIComponent(id)}/shares`);
    if (id !== documentId) return;
    const body = clear($("share-table").tBodies[0]);
    if (!links.length) body.append(el("tr", {}, el("td", { colSpan: 5, class: "hint" }, "No links yet.")));
    for (const link of links) {
      const revoke = link.status === "active"
        ? el("button", { type: "button", class: "small", onclick: () => revokeShare(link.share_id) }, "Revoke",
            el("span", { class: "vh" }, ` the link ${link.label || "without a label"}`))
        : "";
      body.append(el("tr", { "data-share": link.share_id },
        el("td", {}, link.label || "—"), el("td", {}, when(link.created_at)), el("td", {}, when(link.expires_at)),
        el("td", {}, el("span", { class: "badge", "data-tone": link.status === "active" ? "completed" : "cancelled" }, link.status)),
        el("td", {}, revoke)));
    }
  } catch (err) {
    $("share-error").textContent = err.message;
  }
}

async function revokeShare(shareId) {
  $("share-error").textContent = "";
  try {
    await api(`/v1/decks/${encodeURIComponent(documentId)}/shares/${encodeURIComponent(shareId)}`, { method: "DELETE" });
    await listShares();
  } catch (err) {
    $("share-error").textContent = err.message;
  }
}

$("share-panel").addEventListener("toggle", () => $("share-panel").open && listShares());

$("share-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("share-error").textContent = "";
  const days = Number($("share-days").value);
  const label = $("share-label").value.trim();
  try {
    const made = await api(`/v1/decks/${encodeURIComponent(documentId)}/shares`, {
      method: "POST",
      json: { expires_days: days || null, label: label || null },
    });
    $("share-url").value = made.url;
    $("share-copied").textContent = "";
    $("share-made").hidden = false;
    $("share-url").select();
    $("share-label").value = "";
    await listShares();
  } catch (err) {
    $("share-error").textContent = err.message;
  }
});

$("share-copy").addEventListener("click", async () => {
  const url = $("share-url").value;
  try {
    await navigator.clipboard.writeText(url);
    $("share-copied").textContent = "Copied.";
  } catch {
    $("share-url").select();
    $("share-copied").textContent = "Select the link and copy it (Ctrl+C).";
  }
});

// ---- the page ledger ----

// Pages of the document that no card cites, with the reason: the page's own (no text, skipped),
// the deck's (asked again with only its text, its chunk failed) or its passages'.
export async function showLedger(cards, deck) {
  const id = documentId;
  let ledger;
  try {
    ledger = await api(`/v1/documents/${encodeURIComponent(id)}/pages`);
  } catch (err) {
    if (id === documentId) $("ledger-summary").textContent = `Pages that gave no card: ${err.message}`;
    return;
  }
  if (id !== documentId) return;
  const cited = new Set(cards.map((c) => c.source.page));
  const emptyReason = new Map();
  for (const chunk of deck.empty_chunks || []) for (const label of chunk.pages) emptyReason.set(String(label), chunk.reason);
  const deckReason = (deck.quality && deck.quality.pages_without_cards_why) || {};
  const finished = ["completed", "partial", "failed", "cancelled"].includes(deck.status);
  const rows = ledger.pages.filter((p) => !cited.has(p.number));
  const body = clear($("ledger-table").tBodies[0]);
  for (const page of rows) {
    const why = page.reason
      || deckReason[String(page.label)]
      || emptyReason.get(String(page.label))
      || (page.method === "skipped" ? "skipped" : finished ? "its passages gave no card" : "no card yet");
    body.append(el("tr", {}, el("td", {}, page.label || String(page.number)), el("td", {}, (page.section || []).join(" › ") || "—"), el("td", {}, why)));
  }
  if (!rows.length) body.append(el("tr", {}, el("td", { colSpan: 3, class: "hint" }, "Every page gave at least one card.")));
  const total = ledger.pages_total || ledger.pages.length;
  $("ledger-summary").textContent = `Pages that gave no card: ${rows.length} of ${total}${finished ? "" : " so far"}`;
}
