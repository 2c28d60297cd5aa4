// Building the page: elements from plain values. Text always goes in as text (textContent or text
// nodes), never as HTML, so nothing the server or a document says can become markup.

// el("button", { class: "small", type: "button", onclick: fn }, "Cancel")
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && !key.startsWith("aria-") && !key.startsWith("data-")) node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

export function clear(node) {
  node.replaceChildren();
  return node;
}

const CLOZE = /\{\{c\d+::(.*?)(?:::(.*?))?\}\}/g;

// A cloze text as nodes: the deletions hidden ("[…]", or the hint) or shown (marked).
export function clozeNodes(text, reveal) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(CLOZE)) {
    out.push(text.slice(last, m.index));
    out.push(
      reveal
        ? el("mark", { class: "cloze" }, m[1])
        : el("span", { class: "cloze-gap" }, `[${m[2] || "…"}]`),
    );
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out.filter((part) => part !== "");
}

// A card's front as shown in a list: a cloze with its deletions marked in place.
export function frontNodes(card, reveal = true) {
  return card.type === "cloze" ? clozeNodes(card.front, reveal) : [card.front];
}

// Where a card comes from, in words: "notes.pdf · page 3 · Part I › Cells".
export function sourceText(src) {
  const page = src.page ? `page ${src.page_label || src.page}` : "";
  return [src.file, page, (src.section || []).join(" › ")].filter(Boolean).join(" · ");
}

// Say something to screen readers through the page's polite live region.
export function announce(text) {
  const region = $("announcer");
  if (!region) return;
  region.textContent = "";
  // A new text node in a later task is announced even when the words repeat.
  requestAnimationFrame(() => { region.textContent = text; });
}
