// The documents screen: a drop zone that uploads many files at once (each its own POST), and a
// live row per document, filled from GET /v1/documents and kept current by the event stream.

import { api, upload } from "./api.js";
import { $, announce, el } from "./dom.js";
import { duration, plural } from "./format.js";
import { FINAL, isOlder } from "./progress.js";
import { onEvent } from "./stream.js";

const STAGES = {
  uploading: "Uploading",
  refused: "Not accepted",
  queued: "Queued",
  extracting: "Reading pages",
  generating: "Writing cards",
  completed: "Completed",
  partial: "Partial",
  failed: "Failed",
  cancelled: "Cancelled",
};
const TYPES = /\.(pdf|docx|pptx|txt|md)$/i;
const PARALLEL_UPLOADS = 3;

const rows = new Map(); // document id -> Row
const pending = new Set(); // rows still uploading (no id yet)
let unsubscribe = null;
let ticker = null;

class Row {
  constructor(filename) {
    this.id = null;
    this.snap = { status: "uploading", filename, pages_total: 0, pages_done: 0, chunks_total: 0, chunks_done: 0, chunks_failed: 0, cards: 0, progress: 0, generation: null };
    this.firstSample = null; // {t, done}: when the first written chunk was seen
    this.lastSample = null;
    this.finishedAt = null;
    this.startedAt = null;
    this.note = "";
    const stat = (label, cls) => el("div", {}, el("dt", { text: label }), el("dd", { class: cls }));
    this.node = el(
      "li",
      { class: "doc-row", "data-status": "uploading" },
      el("div", { class: "row-head" },
        el("h2", { class: "name", text: filename, title: filename }),
        el("span", { class: "status badge" })),
      el("progress", { max: 1, value: 0, "aria-label": `Progress of ${filename}` }),
      el("dl", { class: "stats" },
        stat("Pages", "pages"), stat("Chunks", "chunks"), stat("Cards", "cards"),
        stat("Elapsed", "elapsed"), stat("Time left", "left")),
      el("p", { class: "note" }),
      el("div", { class: "actions" },
        el("a", { class: "button open", text: "Open deck", hidden: true }),
        el("button", { type: "button", class: "cancel", text: "Cancel", hidden: true, onclick: () => this.act("cancel") }),
        el("button", { type: "button", class: "retry", text: "Retry failed", hidden: true, onclick: () => this.act("retry") }),
        el("button", { type: "button", class: "reprocess", text: "Reprocess", hidden: true, onclick: () => this.act("reprocess") }),
        el("button", { type: "button", class: "dismiss", text: "Dismiss", hidden: true, onclick: () => this.dismiss() })),
    );
    this.render();
  }

  part(cls) {
    return this.node.querySelector(`.${cls}`);
  }

  // `uploaded`: this page sent the file just now (so it is queued, and its clock starts).
  accepted(id, uploaded) {
    this.id = id;
    this.node.dataset.document = id;
    if (uploaded && this.snap.status === "uploading") {
      this.snap.status = "queued";
      this.startedAt = Date.now();
    }
    this.render();
  }

  // A snapshot from the list, an action's answer or a progress event (older ones left out).
  apply(s) {
    const cur = this.snap;
    if (isOlder(s, cur)) return;
    if (cur.generation !== null && s.generation > cur.generation) {
      this.firstSample = this.lastSample = this.finishedAt = null;
      this.startedAt = Date.now();
    }
    const was = cur.status;
    const seenRunning = cur.generation !== null && !FINAL.has(was);
    this.snap = { ...cur, ...s };
    this.sample();
    if (was !== this.snap.status) {
      if (FINAL.has(this.snap.status) && seenRunning) {
        this.finishedAt = Date.now();
        this.refreshSoon(); // the deck is assembled just after: its card count and failures
      }
      if (!FINAL.has(this.snap.status)) this.finishedAt = null;
      if (was !== "uploading" || FINAL.has(this.snap.status)) {
        const cards = FINAL.has(this.snap.status) ? `, ${plural(this.cards(), "card")}` : "";
        announce(`${this.snap.filename}: ${STAGES[this.snap.status] || this.snap.status}${cards}`);
      }
    }
    this.render();
  }

  // Asked again until the deck is assembled (its card count known), backing off.
  refreshSoon(tries = 0) {
    setTimeout(async () => {
      if (rows.get(this.id) !== this || !FINAL.has(this.snap.status)) return;
      const s = await api(`/v1/documents/${encodeURIComponent(this.id)}`).catch(() => null);
      if (s && rows.get(this.id) === this) this.apply(s);
      if ((!s || s.deck_cards == null) && tries < 6) this.refreshSoon(tries + 1);
    }, 500 * 2 ** tries);
  }

  cards() {
    return this.snap.deck_cards ?? this.snap.cards;
  }

  // The pace of writing cards: chunks done per second since the first one was seen done.
  sample() {
    const { chunks_done: done } = this.snap;
    if (FINAL.has(this.snap.status) || done === 0) return;
    const now = Date.now();
    if (!this.firstSample) this.firstSample = { t: now, done };
    else if (done > this.lastSample.done) this.lastSample = { t: now, done };
    this.lastSample ??= this.firstSample;
  }

  timeLeft() {
    const s = this.snap;
    if (FINAL.has(s.status)) return "—";
    if (s.status === "queued" || s.status === "uploading") return "waiting to start";
    const first = this.firstSample, last = this.lastSample;
    if (!first || !last || last.done <= first.done || last.t <= first.t) return "estimating…";
    const pace = (last.done - first.done) / (last.t - first.t); // chunks per ms
    const remaining = Math.max(0, s.chunks_total - s.chunks_done - s.chunks_failed);
    const left = remaining / pace - (Date.now() - last.t);
    return left > 1000 ? `about ${duration(left)}` : "almost done";
  }

  // Since the upload (the first generation) or since this page saw a reprocessing start; for a
  // finished document, until its deck was assembled (or this page saw it finish).
  elapsed() {
    const s = this.snap;
    const since = s.generation === 1 && s.created_at ? s.created_at : this.startedAt;
    if (!since) return "—";
    if (!FINAL.has(s.status)) return duration(Date.now() - since);
    const end = this.finishedAt ?? s.finished_at;
    return end && end >= since ? duration(end - since) : "—";
  }

  tick() {
    this.part("elapsed").textContent = this.elapsed();
    this.part("left").textContent = this.timeLeft();
  }

  render() {
    const s = this.snap;
    const status = s.status;
    this.node.dataset.status = status;
    this.node.dataset.generation = s.generation;
    const badge = this.part("status");
    badge.textContent = STAGES[status] || status;
    badge.dataset.tone = FINAL.has(status) ? status : status === "refused" ? "failed" : "running";
    this.part("name").textContent = s.filename;
    const bar = this.node.querySelector("progress");
    bar.value = FINAL.has(status) ? 1 : s.progress || 0;
    this.part("pages").textContent = s.pages_total ? `page ${s.pages_done}/${s.pages_total}` : "—";
    this.part("chunks").textContent = s.chunks_total
      ? `${s.chunks_done}/${s.chunks_total} done` + (s.chunks_failed ? `, ${s.chunks_failed} failed` : "")
      : "—";
    this.part("chunks").classList.toggle("bad", s.chunks_failed > 0);
    this.part("cards").textContent = String(this.cards());
    this.tick();
    const note = this.note || s.error || (s.waiting ? `Waiting: ${s.waiting}` : "") || failuresNote(s) || duplicatesNote(s);
    const noteNode = this.part("note");
    noteNode.textContent = note;
    noteNode.title = note;
    const open = this.part("open");
    open.hidden = !this.id;
    if (this.id) open.href = `#/deck/${encodeURIComponent(this.id)}`;
    const running = this.id && !FINAL.has(status);
    this.part("cancel").hidden = !running;
    this.part("retry").hidden = !(this.id && s.chunks_failed > 0 && FINAL.has(status));
    this.part("reprocess").hidden = !(this.id && FINAL.has(status));
    this.part("dismiss").hidden = status !== "refused";
  }

  uploading(fraction) {
    this.note = `Uploading… ${Math.round(fraction * 100)} %`;
    this.node.querySelector("progress").value = 0;
    this.render();
  }

  refused(err) {
    this.snap.status = "refused";
    this.note = err.message;
    this.render();
    announce(`${this.snap.filename} was not accepted: ${err.message}`);
  }

  dismiss() {
    this.node.remove();
    showEmpty();
  }

  async act(what) {
    this.note = "";
    const button = this.part(what);
    button.disabled = true;
    try {
      const json = what === "reprocess" ? {} : undefined;
      const answer = await api(`/v1/documents/${encodeURIComponent(this.id)}/${what}`, { method: "POST", json });
      if (what === "reprocess") {
        this.apply({ generation: answer.generation, status: "queued", pages_done: 0, chunks_done: 0, chunks_total: 0, chunks_failed: 0, cards: 0, progress: 0, deck_cards: null, error: null });
      } else {
        this.apply(answer);
      }
    } catch (err) {
      this.note = err.message;
      this.render();
    } finally {
      button.disabled = false;
    }
  }
}

function failuresNote(s) {
  const failures = s.failures || [];
  if (!failures.length) return "";
  const reasons = [...new Set(failures.map((f) => f.reason))];
  return `${plural(failures.length, "chunk")} failed: ${reasons.join("; ")}`;
}

// Cards written, and in the deck once duplicates across passages were left out.
function duplicatesNote(s) {
  const gone = s.deck_cards == null ? 0 : s.cards - s.deck_cards;
  return gone > 0 ? `${plural(gone, "near-duplicate card")} left out of the deck` : "";
}

function showEmpty() {
  $("documents-empty").hidden = $("doc-list").children.length > 0;
}

function rowFor(snapshot) {
  let row = rows.get(snapshot.document_id);
  if (row) return row;
  // An upload of this page the stream told of before its POST answered: that row is this one.
  row = [...pending].find((r) => r.snap.filename === snapshot.filename);
  const uploaded = Boolean(row);
  if (row) pending.delete(row);
  else {
    row = new Row(snapshot.filename);
    $("doc-list").prepend(row.node);
  }
  row.accepted(snapshot.document_id, uploaded);
  rows.set(snapshot.document_id, row);
  showEmpty();
  return row;
}

function onStreamEvent(name, data) {
  if (name === "progress" || name === "done") rowFor(data).apply(data);
  else if (name === "waiting") rows.get(data.document_id)?.apply({ ...rows.get(data.document_id).snap, waiting: data.reason });
}

export async function start() {
  stop();
  unsubscribe = onEvent(onStreamEvent);
  ticker = setInterval(() => {
    for (const row of rows.values()) if (!FINAL.has(row.snap.status)) row.tick();
  }, 1000);
  try {
    const list = await api("/v1/documents");
    for (const snap of [...list].reverse()) rowFor(snap).apply(snap);
  } catch (err) {
    if (err.status !== 401) $("upload-error").textContent = `Your documents could not be listed: ${err.message}`;
  }
  showEmpty();
}

export function stop() {
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
  clearInterval(ticker);
  rows.clear();
  pending.clear();
  $("doc-list").replaceChildren();
}

export function show() {
  document.title = "Documents · deckstream";
}

// The snapshot of a document this screen keeps current (the deck screen reads its status).
export function snapshot(id) {
  return rows.get(id)?.snap;
}

function options() {
  const card_types = [];
  if ($("opt-basic").checked) card_types.push("basic");
  if ($("opt-cloze").checked) card_types.push("cloze");
  const density = Number($("opt-density").value);
  if (!card_types.length) throw new Error("Choose at least one kind of card: basic or cloze.");
  if (!Number.isInteger(density) || density < 1 || density > 20) throw new Error("Cards per passage is a whole number from 1 to 20.");
  return { card_types, cards_per_chunk: density };
}

function uploadFiles(files) {
  const error = $("upload-error");
  error.textContent = "";
  let chosen;
  try {
    chosen = options();
  } catch (err) {
    error.textContent = err.message;
    return;
  }
  const refused = files.filter((f) => !TYPES.test(f.name));
  if (refused.length) error.textContent = `Not a PDF, Word, PowerPoint, text or Markdown file: ${refused.map((f) => f.name).join(", ")}.`;
  // Every row is made now, in the same task as the drop or pick (no shift the user did not cause).
  const queue = files.filter((f) => TYPES.test(f.name)).map((file) => {
    const row = new Row(file.name);
    pending.add(row);
    $("doc-list").prepend(row.node);
    return { file, row };
  });
  showEmpty();
  const next = async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const { file, row } = item;
      try {
        const accepted = await upload(file, chosen, (f) => row.uploading(f));
        row.note = "";
        pending.delete(row);
        const known = rows.get(accepted.document_id);
        if (known && known !== row) row.node.remove(); // the stream made its row already
        else {
          rows.set(accepted.document_id, row);
          row.accepted(accepted.document_id, true);
        }
      } catch (err) {
        pending.delete(row);
        row.refused(err);
      }
    }
  };
  for (let i = 0; i < PARALLEL_UPLOADS; i++) next();
}

$("pick-files").addEventListener("click", () => $("file-input").click());
$("file-input").addEventListener("change", (e) => {
  uploadFiles([...e.target.files]);
  e.target.value = ""; // the same file may be chosen again
});
$("upload-form").addEventListener("submit", (e) => e.preventDefault());

const zone = $("dropzone");
zone.addEventListener("dragover", (e) => {
  e.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  uploadFiles([...e.dataTransfer.files]);
});
