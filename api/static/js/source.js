// The source pane: a card's page beside it (below it on a phone), as the page's image with the
// supporting passage boxed over it, or as the page's text with the passage marked (Word,
// PowerPoint and text files have no page image).

import { api } from "./api.js";
import { $, clear, el } from "./dom.js";

const PHONE = window.matchMedia("(max-width: 820px)");
let controller = null;
let shownFor = null; // the card <li> the pane belongs to

// On a phone the pane goes inside the chosen card; on a wide screen it stays in its column.
function place() {
  const pane = $("source-pane");
  if (PHONE.matches && shownFor && shownFor.isConnected) shownFor.append(pane);
  else if (pane.parentElement !== $("source-slot")) $("source-slot").append(pane);
}
PHONE.addEventListener("change", place);

export function reset() {
  if (controller) controller.abort();
  controller = null;
  shownFor = null;
  place();
  $("source-title").textContent = "Source page";
  $("source-hint").hidden = false;
  clear($("source-body"));
}

// The path of an absolute URL of this API (the page asks its own origin, whatever the proxy).
const pathOf = (url) => {
  const u = new URL(url, location.href);
  return u.pathname + u.search;
};

export async function showSource(documentId, card, item) {
  if (controller) controller.abort();
  controller = new AbortController();
  const { signal } = controller;
  shownFor = item;
  place();
  const body = $("source-body");
  $("source-hint").hidden = true;
  $("source-title").textContent = `Page ${card.source.page_label || card.source.page}`;
  body.setAttribute("aria-busy", "true");
  try {
    const path = `/v1/decks/${encodeURIComponent(documentId)}/cards/${encodeURIComponent(card.card_id)}/source`;
    const src = await api(path, { signal });
    const head = [
      el("p", { class: "src" }, [card.source.file, `page ${src.page_label} of ${src.pages_total}`, src.section.join(" › ")].filter(Boolean).join(" · ")),
      src.passage
        ? el("blockquote", { class: "passage" }, el("span", { class: "vh" }, "The passage the card comes from: "), src.passage)
        : el("p", { class: "hint" }, "No passage on this page matches the card closely: the whole page is shown."),
    ];
    let view = null;
    if (src.image_url) view = await pageImage(src, card, signal).catch((err) => (err.name === "AbortError" ? Promise.reject(err) : null));
    if (signal.aborted) return;
    clear(body).append(...head, view || pageText(src));
    const mark = body.querySelector(".page-text mark");
    if (mark) mark.parentElement.closest(".page-text").scrollTop = mark.offsetTop - 24;
  } catch (err) {
    if (err.name === "AbortError") return;
    clear(body).append(el("p", { class: "error" }, `The page could not be shown: ${err.message}`));
  } finally {
    if (!signal.aborted) body.removeAttribute("aria-busy");
  }
}

// The image, decoded before it is shown (its size known: nothing moves when it appears), with a
// box over each rectangle of the passage (fractions of the page's width and height).
async function pageImage(src, card, signal) {
  const img = el("img", {
    src: pathOf(src.image_url),
    alt: `Page ${src.page_label} of ${card.source.file}` + (src.rects.length ? ", the passage highlighted" : ""),
  });
  await img.decode();
  if (signal.aborted) throw new DOMException("aborted", "AbortError");
  img.width = img.naturalWidth;
  img.height = img.naturalHeight;
  const frame = el("div", { class: "page-frame" }, img);
  for (const r of src.rects) {
    const box = el("div", { class: "highlight", "aria-hidden": "true" });
    Object.assign(box.style, { left: `${r.x * 100}%`, top: `${r.y * 100}%`, width: `${r.width * 100}%`, height: `${r.height * 100}%` });
    frame.append(box);
  }
  return el("figure", { class: "page-figure" }, frame);
}

// Whitespace-insensitive: where the passage is in the page's text, as [start, end) or null.
function find(text, passage) {
  const exact = text.indexOf(passage);
  if (exact >= 0) return [exact, exact + passage.length];
  const at = []; // the index in `text` of each character of the squeezed text
  let squeezed = "";
  for (let i = 0; i < text.length; i++) {
    if (/\s/.test(text[i]) && (squeezed.endsWith(" ") || squeezed === "")) continue;
    squeezed += /\s/.test(text[i]) ? " " : text[i];
    at.push(i);
  }
  const wanted = passage.replace(/\s+/g, " ").trim();
  const start = squeezed.indexOf(wanted);
  if (start < 0 || !wanted) return null;
  return [at[start], at[start + wanted.length - 1] + 1];
}

function pageText(src) {
  const box = el("div", { class: "page-text", tabindex: "0", role: "region", "aria-label": `Text of page ${src.page_label}` });
  const text = src.text || "(no text on this page)";
  const span = src.passage ? find(text, src.passage) : null;
  if (span) box.append(text.slice(0, span[0]), el("mark", {}, text.slice(span[0], span[1])), text.slice(span[1]));
  else box.append(text);
  return box;
}
