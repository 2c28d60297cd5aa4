// The deck screen: a document's cards, also while they are being written (card events on the
// stream are appended below the others: nothing above them moves), with filters, editing, marks
// to check, and a card's source page beside it.

import { api } from "./api.js";
import * as tools from "./decktools.js";
import { $, announce, clear, el, frontNodes, sourceText } from "./dom.js";
import { plural } from "./format.js";
import { FINAL, isOlder } from "./progress.js";
import { reset as resetSource, showSource } from "./source.js";
import { onEvent } from "./stream.js";

let state = null;

// A card from the deck (source nested) or from a card event (flat), in one shape.
function normal(card) {
  const source = card.source || { file: card.file, page: card.page, page_label: card.page_label, section: card.section || [] };
  return { card_id: card.card_id, type: card.type, front: card.front, back: card.back, source, tags: card.tags || [], needs_review: Boolean(card.needs_review), review: card.review || null };
}

const tagsOf = (text) => text.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
const deckPath = (rest = "") => `/v1/decks/${encodeURIComponent(state.id)}${rest}`;
const cardPath = (card, rest = "") => deckPath(`/cards/${encodeURIComponent(card.card_id)}${rest}`);

export async function show(id) {
  hide();
  state = { id, cards: new Map(), items: new Map(), deck: null, buffer: [], generation: null, snap: null, selected: null };
  const mine = state;
  document.title = "Deck · deckstream";
  $("deck-title").textContent = "Deck";
  $("deck-status").textContent = "Loading the deck…";
  clear($("card-list"));
  resetFilters();
  tools.open(id);
  resetSource();
  state.unsubscribe = onEvent(onStreamEvent);
  try {
    const [deck, snap] = await Promise.all([api(deckPath()), api(`/v1/documents/${encodeURIComponent(id)}`)]);
    if (state !== mine) return;
    // The newest generation's progress, if it is the one shown (a reprocessing may be running).
    state.snap = snap.generation === deck.generation ? snap : { status: deck.status, generation: deck.generation };
    load(deck);
    for (const [name, data] of state.buffer.splice(0)) onStreamEvent(name, data);
  } catch (err) {
    if (state === mine) $("deck-status").textContent = `The deck could not be opened: ${err.message}`;
  }
}

export function hide() {
  if (!state) return;
  state.unsubscribe?.();
  clearTimeout(state.timer);
  tools.close();
  resetSource();
  state = null;
}

function load(deck) {
  state.deck = deck;
  state.generation = deck.generation;
  state.snap ??= { status: deck.status };
  $("deck-title").textContent = deck.filename;
  document.title = `${deck.filename} · deckstream`;
  const incoming = deck.cards.map(normal);
  const keep = new Set(incoming.map((c) => c.card_id));
  for (const id of [...state.cards.keys()]) if (!keep.has(id)) removeCard(id);
  for (const card of incoming) putCard(card);
  refreshFilters();
  status();
  tools.showLedger([...state.cards.values()], deck);
}

function onStreamEvent(name, data) {
  if (!state || data.document_id !== state.id) return;
  if (!state.deck) {
    state.buffer.push([name, data]);
    return;
  }
  if (name === "progress" || name === "done") {
    state.streamGeneration = data.generation;
    if (data.generation !== state.generation || isOlder(data, state.snap)) return; // another generation, or told again
    const wasRunning = !FINAL.has(state.snap.status);
    state.snap = { ...state.snap, ...data };
    status();
    // Finished: by `done`, or by a `progress` that already says so (then `done` finds it final).
    if (wasRunning && FINAL.has(state.snap.status)) settle();
  } else if (name === "card" && !FINAL.has(state.snap.status) && (state.streamGeneration ?? state.generation) === state.generation) {
    // Only while it is written: a finished deck's cards told again are in it already, or were
    // left out of it as near-duplicates.
    if (!state.cards.has(data.card_id)) {
      putCard(normal(data));
      refreshFilters();
      status();
    }
  }
}

// After `done` the deck is assembled (duplicates across passages removed): ask until it is,
// every 5 s at most and for 5 minutes at most, showing what there is after the first 20 s.
function settle(tries = 0) {
  const mine = state;
  api(deckPath()).then((deck) => {
    if (state !== mine) return;
    if (deck.complete || tries === 8) load(deck);
    if (!deck.complete && tries < 64) state.timer = setTimeout(() => settle(tries + 1), 300 * 2 ** Math.min(tries, 4));
  }, () => {});
}

function status() {
  const s = state.snap || {};
  const cards = [...state.cards.values()];
  const check = cards.filter((c) => c.needs_review).length;
  const parts = [
    FINAL.has(s.status) ? s.status[0].toUpperCase() + s.status.slice(1) : s.status === "queued" ? "Queued" : "Being written",
    plural(cards.length, "card"),
  ];
  if (check) parts.push(`${check} to check`);
  if (!FINAL.has(s.status) && s.pages_total) parts.push(`page ${s.pages_done}/${s.pages_total}`);
  $("deck-status").textContent = parts.join(" · ");
  $("filter-check-label").textContent = `only cards to check (${check})`;
}

// ---- cards ----

// `force`: also over an open edit form (the edit's own answer).
function putCard(card, force = false) {
  state.cards.set(card.card_id, card);
  const old = state.items.get(card.card_id);
  if (old && !force && old.querySelector(".card-form")) return old; // being edited: the form stays
  const item = el("li", { class: "card" });
  fillItem(item, card);
  if (old) {
    keepPane(old, item);
    old.replaceWith(item);
  }
  else $("card-list").append(item);
  state.items.set(card.card_id, item);
  if (state.selected === card.card_id) select(card.card_id);
  applyFilters(item, card);
  return item;
}

function removeCard(id) {
  state.items.get(id)?.remove();
  state.items.delete(id);
  state.cards.delete(id);
  if (state.selected === id) {
    state.selected = null;
    resetSource();
  }
}

// On a phone the source pane sits inside the chosen card: it stays when the card is redrawn.
function keepPane(from, to) {
  const pane = from.querySelector("#source-pane");
  if (pane) to.append(pane);
}

function fillItem(item, card) {
  const pane = item.querySelector("#source-pane");
  const fid = `front-${card.card_id}`;
  item.dataset.card = card.card_id;
  item.dataset.type = card.type;
  item.classList.toggle("to-check", card.needs_review);
  item.classList.toggle("selected", state.selected === card.card_id);
  const front = el("p", { class: "front", id: fid }, frontNodes(card));
  const back = el("p", { class: "back" }, el("span", { class: "label" }, card.type === "cloze" ? "Answer " : "Back "), card.back);
  const meta = el("p", { class: "card-meta" },
    el("span", { class: "badge", "data-tone": card.type }, card.type),
    el("span", { class: "src" }, sourceText(card.source)));
  const tags = card.tags.length ? el("p", { class: "tags" }, el("span", { class: "vh" }, "Tags: "), ...card.tags.map((t) => el("span", { class: "tag" }, t))) : "";
  const check = card.needs_review
    ? el("div", { class: "check" },
        el("p", {}, el("strong", {}, "To check: "), card.review || "the model was not sure of this card"),
        el("button", { type: "button", class: "small", "aria-describedby": fid, onclick: () => verdict(card, "accept") }, "Keep it"),
        el("button", { type: "button", class: "small", "aria-describedby": fid, onclick: () => verdict(card, "dismiss") }, "Remove it"))
    : "";
  const actions = el("div", { class: "card-actions" },
    el("button", { type: "button", class: "small source-button", "aria-describedby": fid, "aria-pressed": String(state.selected === card.card_id), onclick: () => select(card.card_id, true) }, "Source"),
    el("button", { type: "button", class: "small edit-button", "aria-describedby": fid, onclick: () => edit(card) }, "Edit"),
    el("button", { type: "button", class: "small delete-button", "aria-describedby": fid, onclick: (e) => remove(card, e.currentTarget) }, "Delete"));
  clear(item).append(meta, front, back, tags, check, actions);
  if (pane) item.append(pane);
}

function select(id, focus = false) {
  const card = state.cards.get(id);
  if (!card) return;
  const was = state.selected;
  state.selected = id;
  if (was && was !== id) {
    const prev = state.items.get(was);
    prev?.classList.remove("selected");
    prev?.querySelector(".source-button")?.setAttribute("aria-pressed", "false");
  }
  const item = state.items.get(id);
  item.classList.add("selected");
  item.querySelector(".source-button").setAttribute("aria-pressed", "true");
  $("add-page").value = card.source.page;
  if (was !== id || focus) showSource(state.id, card, item);
}

async function verdict(card, choice) {
  try {
    const answer = await api(cardPath(card, "/check"), { method: "POST", json: { verdict: choice } });
    if (answer.in_deck) putCard(normal(answer.card));
    else removeCard(card.card_id);
    announce(choice === "accept" ? "The card is kept, without the mark." : "The card is removed from the deck.");
    refreshFilters();
    status();
  } catch (err) {
    showItemError(card, err);
  }
}

function showItemError(card, err) {
  const item = state.items.get(card.card_id);
  if (!item) return;
  item.querySelector(".item-error")?.remove();
  item.append(el("p", { class: "error item-error", role: "alert" }, err.message));
}

function edit(card) {
  const item = state.items.get(card.card_id);
  const field = (label, input) => el("label", {}, label, input);
  const front = el("textarea", { rows: 3, value: card.front, required: true });
  const back = el("textarea", { rows: 2, value: card.back });
  const type = el("select", {}, el("option", { value: "basic" }, "basic"), el("option", { value: "cloze" }, "cloze"));
  type.value = card.type;
  const tags = el("input", { value: card.tags.join(" "), placeholder: "words, separated by spaces" });
  const error = el("p", { class: "error", role: "alert" });
  const done = () => {
    fillItem(item, state.cards.get(card.card_id) || card);
    item.querySelector(".edit-button")?.focus();
  };
  const form = el("form", { class: "card-form", "aria-label": "Edit the card" },
    field("Front", front), field("Back", back), field("Type", type), field("Tags", tags), error,
    el("div", { class: "buttons" },
      el("button", { type: "submit", class: "primary" }, "Save"),
      el("button", { type: "button", onclick: done }, "Cancel")));
  form.addEventListener("keydown", (e) => e.key === "Escape" && done());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const saved = await api(cardPath(card), {
        method: "PATCH",
        json: { front: front.value, back: back.value, type: type.value, tags: tagsOf(tags.value) },
      });
      putCard(normal(saved), true);
      refreshFilters();
      status();
      announce("The card is saved.");
      state.items.get(card.card_id)?.querySelector(".edit-button")?.focus();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  const pane = item.querySelector("#source-pane");
  clear(item).append(form);
  if (pane) item.append(pane);
  front.focus();
}

// Two steps: the first press asks, the second deletes.
async function remove(card, button) {
  if (button.dataset.armed !== "yes") {
    button.dataset.armed = "yes";
    button.textContent = "Delete it for good";
    button.classList.add("danger");
    return;
  }
  try {
    await api(cardPath(card), { method: "DELETE" });
    removeCard(card.card_id);
    refreshFilters();
    status();
    announce("The card is deleted.");
  } catch (err) {
    showItemError(card, err);
  }
}

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("add-error").textContent = "";
  const front = $("add-front").value.trim();
  if (!front) {
    $("add-error").textContent = "Write the card's front.";
    return;
  }
  try {
    const made = await api(deckPath("/cards"), {
      method: "POST",
      json: { type: $("add-type").value, front, back: $("add-back").value.trim(), tags: tagsOf($("add-tags").value), page: Number($("add-page").value) || 1 },
    });
    const item = putCard(normal(made));
    refreshFilters();
    status();
    $("add-front").value = "";
    $("add-back").value = "";
    announce("The card is added at the end of the deck.");
    item.scrollIntoView({ block: "nearest" });
  } catch (err) {
    $("add-error").textContent = err.message;
  }
});

// ---- filters ----

const FILTERS = ["filter-section", "filter-page", "filter-type", "filter-check"];

function resetFilters() {
  for (const id of FILTERS) {
    const input = $(id);
    if (input.type === "checkbox") input.checked = false;
    else input.value = "";
  }
  for (const id of ["filter-section", "filter-page"]) {
    const select = $(id);
    while (select.options.length > 1) select.remove(1);
  }
}

// The section and page choices: those of the cards there are (new ones as cards stream in).
function refreshFilters() {
  const cards = [...state.cards.values()];
  const sections = [...new Set(cards.map((c) => c.source.section.join(" › ")).filter(Boolean))].sort();
  const pages = new Map(cards.map((c) => [c.source.page, c.source.page_label || String(c.source.page)]));
  fillSelect($("filter-section"), sections.map((s) => [s, s]));
  fillSelect($("filter-page"), [...pages].sort((a, b) => a[0] - b[0]).map(([n, label]) => [String(n), `page ${label}`]));
  filterAll();
}

function fillSelect(select, choices) {
  const chosen = select.value;
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join("\n") === choices.map((c) => c[0]).join("\n")) return;
  while (select.options.length > 1) select.remove(1);
  for (const [value, label] of choices) select.append(el("option", { value }, label));
  select.value = choices.some((c) => c[0] === chosen) ? chosen : "";
}

function passes(card) {
  const section = $("filter-section").value;
  const page = $("filter-page").value;
  const type = $("filter-type").value;
  if (section && card.source.section.join(" › ") !== section) return false;
  if (page && String(card.source.page) !== page) return false;
  if (type && card.type !== type) return false;
  return !$("filter-check").checked || card.needs_review;
}

function applyFilters(item, card) {
  item.hidden = !passes(card);
}

function filterAll() {
  let shown = 0;
  for (const [id, item] of state.items) {
    applyFilters(item, state.cards.get(id));
    if (!item.hidden) shown++;
  }
  $("filter-count").textContent = `Showing ${shown} of ${plural(state.cards.size, "card")}`;
}

$("filters").addEventListener("change", () => state && filterAll());
$("filters").addEventListener("submit", (e) => e.preventDefault());
