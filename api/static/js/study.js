// Study with the FSRS scheduler the API keeps: the due counts of every deck, and a session on one
// deck driven by the keyboard (Space shows the answer, 1–4 grade it) or the buttons.

import { api } from "./api.js";
import { snapshot } from "./documents.js";
import { $, announce, clear, clozeNodes, el, sourceText } from "./dom.js";
import { fromNow, plural, when } from "./format.js";

const BATCH = 20;
let session = null; // {id, queue, card, shown, reviewed, busy}

export async function show(id) {
  hide();
  $("study-error").textContent = "";
  if (id) return startSession(id);
  $("study-overview").hidden = false;
  $("study-session").hidden = true;
  $("study-to-decks").hidden = true;
  $("study-title").textContent = "Study";
  document.title = "Study · deckstream";
  await overview();
}

export function hide() {
  session = null;
}

async function overview() {
  const body = clear($("study-table").tBodies[0]);
  $("study-total").textContent = "Loading…";
  try {
    const due = await api("/v1/study");
    const t = due.total;
    // New cards are ready at once; studied ones when the scheduler says they are due.
    $("study-total").textContent = `${plural(t.new + t.due_now, "card")} to study now: ${t.new} new, ${t.due_now} due (${t.review_due} for review).`
      + (t.next_due_at && !t.due_now ? ` The next studied card is due ${fromNow(t.next_due_at)}.` : "");
    for (const d of due.decks) {
      const go = d.due_now + d.new
        ? el("a", { class: "button small", href: `#/study/${encodeURIComponent(d.document_id)}` }, "Study", el("span", { class: "vh" }, ` ${d.filename}`))
        : "";
      body.append(el("tr", { "data-deck": d.document_id },
        el("th", { scope: "row" }, d.filename),
        el("td", { class: "num" }, String(d.new)), el("td", { class: "num" }, String(d.learning)),
        el("td", { class: "num due" }, String(d.due_now)),
        el("td", {}, d.next_due_at ? when(d.next_due_at) : "—"), el("td", {}, go)));
    }
    if (!due.decks.length) body.append(el("tr", {}, el("td", { colSpan: 6, class: "hint" }, "No decks yet: upload a document first.")));
  } catch (err) {
    $("study-total").textContent = `The due counts could not be loaded: ${err.message}`;
  }
}

async function startSession(id) {
  $("study-overview").hidden = true;
  $("study-session").hidden = false;
  $("study-to-decks").hidden = false;
  $("study-done").hidden = true;
  session = { id, queue: [], card: null, shown: false, reviewed: 0, busy: false, filename: snapshot(id)?.filename || "" };
  $("study-title").textContent = "Study";
  await refill();
}

async function refill() {
  const mine = session;
  try {
    const q = await api(`/v1/decks/${encodeURIComponent(mine.id)}/study?limit=${BATCH}`);
    if (session !== mine) return;
    mine.queue = q.next;
    mine.last = q;
    if (!mine.filename && q.next.length) mine.filename = q.next[0].source.file;
    counts(q);
    next(q);
  } catch (err) {
    if (session === mine) $("study-error").textContent = err.message;
  }
}

function counts(q) {
  $("study-counts").textContent = `${q.new} new · ${q.learning} learning · ${q.review_due} due for review`
    + (session.reviewed ? ` · ${plural(session.reviewed, "card")} studied now` : "");
  if (session.filename) {
    $("study-title").textContent = `Study: ${session.filename}`;
    document.title = `Study ${session.filename} · deckstream`;
  }
}

function next(q) {
  session.card = session.queue.shift() || null;
  session.shown = false;
  $("study-answer").hidden = true;
  $("grades").hidden = true;
  const card = session.card;
  if (!card) {
    $("show-answer").hidden = true;
    clear($("study-front"));
    $("study-type").textContent = "";
    const later = q && q.next_due_at ? ` The next card is due ${fromNow(q.next_due_at)}.` : "";
    $("study-done").textContent = `Nothing more to study in this deck now.${later}`;
    $("study-done").hidden = false;
    $("study-card").hidden = true;
    return;
  }
  $("study-card").hidden = false;
  $("study-done").hidden = true;
  $("show-answer").hidden = false;
  $("study-type").textContent = card.type === "cloze" ? "Fill in the blank" : "Question";
  clear($("study-front")).append(...(card.type === "cloze" ? clozeNodes(card.front, false) : [card.front]));
  const back = card.type === "cloze" ? clozeNodes(card.front, true) : [card.back];
  clear($("study-back")).append(...back);
  $("study-source").textContent = sourceText(card.source);
}

function reveal() {
  if (!session || !session.card || session.shown) return false;
  session.shown = true;
  $("study-answer").hidden = false;
  $("show-answer").hidden = true;
  $("grades").hidden = false;
  $("study-card").focus({ preventScroll: true }); // not a grade button: Space must not grade
  return true;
}

async function grade(rating) {
  if (!session || !session.shown || session.busy) return;
  const mine = session;
  const card = mine.card;
  mine.busy = true;
  $("study-error").textContent = "";
  try {
    const done = await api(`/v1/decks/${encodeURIComponent(mine.id)}/cards/${encodeURIComponent(card.card_id)}/reviews`, {
      method: "POST",
      json: { rating },
    });
    if (session !== mine) return;
    mine.reviewed++;
    announce(`Graded. Next time: ${fromNow(done.due_at)}.`);
    if (mine.queue.length) {
      counts(mine.last);
      next(null);
    } else await refill();
    $("study-card").focus({ preventScroll: true });
  } catch (err) {
    if (session === mine) $("study-error").textContent = err.message;
  } finally {
    mine.busy = false;
  }
}

$("show-answer").addEventListener("click", reveal);
for (const button of $("grades").querySelectorAll("button")) {
  button.addEventListener("click", () => grade(Number(button.dataset.rating)));
}

document.addEventListener("keydown", (e) => {
  if (!session || $("screen-study").hidden || $("study-session").hidden) return;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  if (e.target.closest("input, textarea, select, a")) return;
  const otherButton = e.target.tagName === "BUTTON" && e.target.id !== "show-answer";
  if (e.key === " " && !session.shown && !otherButton) {
    if (reveal()) e.preventDefault();
  } else if (session.shown && ["1", "2", "3", "4"].includes(e.key)) {
    e.preventDefault();
    grade(Number(e.key));
  }
});
