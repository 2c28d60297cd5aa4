// The page a share link opens: the deck, read-only, for anyone holding the link. It never sends
// the viewer's own session (credentials omitted) and passes the link to no other site.

import { el, frontNodes, sourceText } from "./dom.js";

const token = decodeURIComponent(location.pathname.split("/").pop());
const api = `/v1/shared/${encodeURIComponent(token)}`;
const meta = document.getElementById("meta");
const csv = document.getElementById("csv");
csv.href = `${api}?format=csv`;

const r = await fetch(api, { credentials: "omit", referrerPolicy: "no-referrer" });
if (!r.ok) {
  const problem = await r.json().catch(() => ({}));
  meta.textContent = problem.detail || `This link does not work (${r.status}).`;
  meta.className = "error";
  csv.parentElement.hidden = true;
} else {
  const deck = await r.json();
  const name = deck.filename || "Shared deck";
  document.getElementById("title").textContent = name;
  document.title = `${name} · deckstream`;
  meta.textContent = `${deck.cards.length} cards · read-only`;
  const list = document.getElementById("cards");
  for (const card of deck.cards) {
    list.append(el("li", { class: "card" },
      el("p", { class: "card-meta" }, el("span", { class: "badge", "data-tone": card.type }, card.type), el("span", { class: "src" }, sourceText(card.source || {}))),
      el("p", { class: "front" }, frontNodes(card)),
      el("p", { class: "back" }, card.back)));
  }
}
