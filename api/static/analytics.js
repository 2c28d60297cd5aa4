// The analytics page: lists the panels of /v1/analytics/panels and draws each one as a line chart,
// a bar chart or a table (plain SVG and HTML, no library). Refreshes every 10 s while visible.

const SVG = "http://www.w3.org/2000/svg";
const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const REFRESH_MS = 10_000;
// Each at least 3:1 against white; neighbours differ in hue and lightness.
const COLOURS = ["#1f6fb4", "#c2410c", "#2e7d32", "#7b3fa0", "#a16207", "#0e7490", "#be185d", "#57534e"];
const $ = (id) => document.getElementById(id);
const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const fmt = (options) => new Intl.DateTimeFormat(undefined, options);
const TIME = { s: fmt({ hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  m: fmt({ hour: "2-digit", minute: "2-digit" }), d: fmt({ month: "short", day: "numeric" }),
  full: fmt({ month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }) };

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The session cookie of the documents page (HttpOnly: this script never sees it). Analytics
// span every tenant, so only a session opened with the operator key may read them (else 403).
const state = { panels: null, views: new Map(), seq: 0, busy: false, last: 0 };

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", signal: AbortSignal.timeout(20_000) }); // a hung call must not stop the refreshes
  const body = await r.json().catch(() => ({}));
  $("signin").hidden = r.status !== 401 && r.status !== 403;
  if (r.status === 401) throw new ApiError(401, "You are not signed in, or your session has ended.");
  if (r.status === 403) throw new ApiError(403, "The analytics are for operators: sign in with the operator key.");
  if (!r.ok) throw new ApiError(r.status, body.detail || `${r.status} ${r.statusText}`);
  return body;
}

async function refresh() {
  const seq = ++state.seq;
  state.busy = true;
  $("refresh").disabled = true;
  try {
    if (!state.panels) {
      const { panels } = await api("/v1/analytics/panels");
      if (seq !== state.seq) return;
      state.panels = panels;
      layout(panels);
    }
    $("msg").textContent = "";
    const to = Date.now(), from = to - RANGES[$("range").value];
    await Promise.all(state.panels.map((p) => loadPanel(p, from, to, seq)));
    if (seq === state.seq) $("updated").textContent = "Updated " + TIME.s.format(to);
  } catch (err) {
    if (seq !== state.seq) return;
    $("msg").textContent = err instanceof ApiError ? err.message : `Could not load the panels: ${err}`;
    $("updated").textContent = "Not updated";
  } finally {
    if (seq === state.seq) { state.busy = false; state.last = Date.now(); $("refresh").disabled = false; }
  }
}

async function loadPanel(panel, from, to, seq) {
  const view = state.views.get(panel.id);
  view.section.setAttribute("aria-busy", "true");
  try {
    const data = await api(`/v1/analytics/panels/${encodeURIComponent(panel.id)}?from_ms=${from}&to_ms=${to}`);
    if (seq !== state.seq) return;
    view.data = data;
    view.range = { from, to };
    draw(view);
  } catch (err) {
    if (seq !== state.seq) return;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) throw err;
    view.data = null;
    showState(view, "error", `Could not load this panel: ${err.message}`);
  } finally {
    view.section.removeAttribute("aria-busy");
  }
}

// One fixed-height box per panel, made as soon as the list is known: no layout shift later.
function layout(panels) {
  const main = $("panels");
  main.replaceChildren();
  state.views.clear();
  for (const panel of panels) {
    const section = el("section", { class: "panel", "data-kind": panel.kind, "data-panel": panel.id });
    const figure = el("figure");
    const caption = el("figcaption", { id: `title-${panel.id}` }, panel.title);
    const desc = el("p", { class: "desc", id: `desc-${panel.id}` }, panel.description || "");
    const legend = el("ul", { class: "legend", "aria-label": "Series" });
    const plot = el("div", { class: "plot" });
    const details = el("details", {}, el("summary", {}, "Data as a table"));
    // The legend goes under the plot: when it appears, the plot shrinks but does not move.
    const body = el("div", { class: "body" }, plot, legend);
    figure.append(caption, desc, body);
    if (panel.kind !== "table") figure.append(details);
    section.append(figure);
    section.setAttribute("aria-labelledby", caption.id);
    main.append(section);
    const view = { panel, section, legend, plot, details, data: null, width: 0 };
    details.addEventListener("toggle", () => details.open && fillDetails(view));
    state.views.set(panel.id, view);
    showState(view, "loading", "Loading…");
  }
}

function showState(view, name, text) {
  view.section.dataset.state = name;
  view.legend.replaceChildren();
  view.plot.replaceChildren(el("div", { class: "state" }, text));
  view.plot.removeAttribute("tabindex");
  view.plot.removeAttribute("aria-label");
  view.plot.removeAttribute("role");
  view.details.style.visibility = "hidden";
}

function draw(view) {
  const { data } = view;
  if (!data.rows.length) return showState(view, "empty", `No data yet for the ${$("range").selectedOptions[0].text}`);
  view.width = view.plot.clientWidth;
  view.section.dataset.state = "loaded";
  view.details.style.visibility = "";
  if (data.kind === "timeseries") lineChart(view);
  else if (data.kind === "bar") barChart(view);
  else tableView(view);
  if (view.details.open) fillDetails(view);
}

// ---- line chart -------------------------------------------------------------------------------

function lineChart(view) {
  const { columns, rows } = view.data;
  const names = columns.slice(1).map(label);
  legendOf(view, names); // first: the plot gets the height the legend leaves
  const W = view.plot.clientWidth, H = view.plot.clientHeight;
  // From the first row to the end of the range: nothing earlier to show, and a line that stops
  // short of the right edge says that nothing came since.
  const times = rows.map((r) => Number(r[0]));
  const t1 = Math.max(view.range.to, ...times), t0 = Math.min(...times, t1 - 60e3);
  // Buckets without rows break the line instead of joining its neighbours across the gap.
  const gaps = times.slice(1).map((t, j) => t - times[j]).filter((d) => d > 0);
  const step = gaps.length ? Math.min(...gaps) : Infinity;
  const values = rows.flatMap((r) => r.slice(1)).filter(isNum).map(Number);
  const yTicks = niceTicks(Math.min(0, ...values), Math.max(0, ...values), Math.max(2, Math.floor(H / 45)));
  const yLabel = yTicks.map((v) => compact.format(v));
  const m = { l: 8 + 7 * Math.max(...yLabel.map((s) => s.length)), r: 12, t: 8, b: 22 };
  const x = (t) => m.l + ((t - t0) / (t1 - t0)) * (W - m.l - m.r);
  const y0 = yTicks[0], y1 = yTicks[yTicks.length - 1];
  const y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);

  const svg = el(SVG, { width: W, height: H, role: "img", "aria-describedby": `desc-${view.panel.id}` });
  yTicks.forEach((v, i) => {
    svg.append(el(SVG + "line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), stroke: i ? "#e3e3e3" : "#888" }));
    svg.append(el(SVG + "text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, yLabel[i]));
  });
  for (const [t, text] of timeTicks(t0, t1, Math.max(2, Math.floor((W - m.l - m.r) / 95)))) {
    svg.append(el(SVG + "line", { x1: x(t), x2: x(t), y1: H - m.b, y2: H - m.b + 4, stroke: "#888" }));
    const half = text.length * 3.5; // about half the text's width: skip a tick label that would be cut off
    if (x(t) - half >= 0 && x(t) + half <= W) svg.append(el(SVG + "text", { x: x(t), y: H - 6, "text-anchor": "middle" }, text));
  }
  names.forEach((name, i) => {
    const colour = COLOURS[i % COLOURS.length];
    let d = "";
    const joined = (j) => j > 0 && j < rows.length && isNum(rows[j - 1][i + 1]) && isNum(rows[j][i + 1]) &&
      times[j] - times[j - 1] <= 2.5 * step;
    rows.forEach((r, j) => {
      const v = r[i + 1];
      if (!isNum(v)) return;
      d += `${joined(j) ? "L" : "M"}${x(times[j]).toFixed(1)} ${y(Number(v)).toFixed(1)}`;
      const alone = !joined(j) && !joined(j + 1);
      if (alone || rows.length <= 30) {
        svg.append(el(SVG + "circle", { class: "mark", cx: x(times[j]), cy: y(Number(v)), r: alone ? 4 : 2.5, fill: colour }));
      }
    });
    if (d) svg.append(el(SVG + "path", { class: "mark", d, fill: "none", stroke: colour, "stroke-width": 2, "stroke-linejoin": "round" }));
  });
  const cursor = el(SVG + "line", { y1: m.t, y2: H - m.b, stroke: "#555", "stroke-dasharray": "3 3", visibility: "hidden" });
  svg.append(cursor);
  svg.setAttribute("aria-label", summariseSeries(view.panel.title, names, rows, t0, t1));
  const tip = el("div", { class: "tip", role: "status", hidden: "" });
  view.plot.replaceChildren(svg, tip);
  view.plot.tabIndex = 0;
  view.plot.setAttribute("role", "group");
  view.plot.setAttribute("aria-label", `${view.panel.title}: arrow keys step through the values`);
  readout(view, { svg, tip, cursor, x, times, names, W });
}

// Hover or arrow keys show one instant's values (kept across the 10 s redraws).
function readout(view, { svg, tip, cursor, x, times, names, W }) {
  let at = -1;
  const show = (i) => {
    at = view.at = Math.max(0, Math.min(times.length - 1, i));
    const row = view.data.rows[at], cx = x(times[at]);
    cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx); cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(el("div", {}, TIME.full.format(times[at])), ...names.map((n, k) =>
      el("div", {}, el("span", { class: "sw", style: `background:${COLOURS[k % COLOURS.length]}` }), `${n}: ${fmtValue(row[k + 1])}`)));
    tip.hidden = false;
    tip.style.left = `${cx + tip.offsetWidth + 12 > W ? Math.max(0, cx - tip.offsetWidth - 8) : cx + 8}px`;
  };
  const hide = () => { view.at = null; tip.hidden = true; cursor.setAttribute("visibility", "hidden"); };
  svg.addEventListener("pointermove", (e) => {
    const px = e.clientX - svg.getBoundingClientRect().left;
    let best = 0;
    times.forEach((t, i) => { if (Math.abs(x(t) - px) < Math.abs(x(times[best]) - px)) best = i; });
    show(best);
  });
  svg.addEventListener("pointerleave", hide);
  view.plot.onblur = hide;
  view.plot.onkeydown = (e) => {
    const last = times.length - 1, from = at >= 0 ? at : e.key === "ArrowLeft" ? last + 1 : -1;
    const next = { ArrowLeft: from - 1, ArrowRight: from + 1, Home: 0, End: last }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    show(next);
  };
  if (view.at !== null && view.at !== undefined) show(view.at);
}

function summariseSeries(title, names, rows, t0, t1) {
  const parts = names.map((n, i) => {
    const vs = rows.map((r) => r[i + 1]).filter(isNum).map(Number);
    return vs.length ? `${n}: latest ${num.format(vs[vs.length - 1])}, peak ${num.format(Math.max(...vs))}` : `${n}: no values`;
  });
  return `Line chart of ${title}, ${TIME.full.format(t0)} to ${TIME.full.format(t1)}. ${parts.join("; ")}.`;
}

// ---- bar chart --------------------------------------------------------------------------------

// Horizontal bars, one group per row: labels on the left, or above the bars when narrow.
function barChart(view) {
  const { columns, rows } = view.data;
  const names = columns.slice(1).map(label);
  legendOf(view, names);
  // The plot is as tall as its bars (the legend follows them): the room is what the legend leaves.
  const W = view.plot.clientWidth, room = view.plot.parentElement.clientHeight - view.legend.offsetHeight - 6;
  const labels = rows.map((r) => String(r[0] ?? "(none)"));
  const values = rows.flatMap((r) => r.slice(1));
  const max = Math.max(0, ...values.filter(isNum).map(Number)) || 1;
  const valueW = 8 + 7 * Math.max(...values.map((v) => fmtValue(v).length));
  const stacked = W < 480;
  const labelW = stacked ? 0 : Math.min(Math.round(W * 0.4), 10 + 7 * Math.max(...labels.map((s) => s.length)));
  const labelH = stacked ? 17 : 0;
  // Bars as thick as the box allows (12 to 22 px); with more rows than fit, the box scrolls.
  const bar = Math.max(12, Math.min(22, ((room - 4) / rows.length - labelH - 8) / names.length));
  const band = labelH + names.length * bar + 8, H = rows.length * band + 4;
  const len = (v) => (isNum(v) && Number(v) > 0 ? Math.max(1, (Number(v) / max) * (W - labelW - valueW)) : 0);
  const svg = el(SVG, { width: W, height: H, role: "img", "aria-describedby": `desc-${view.panel.id}` });
  rows.forEach((r, j) => {
    const top = j * band + 4;
    const text = stacked
      ? el(SVG + "text", { x: 0, y: top + 12 }, clip(labels[j], W / 7))
      : el(SVG + "text", { x: labelW - 8, y: top + (names.length * bar) / 2 + 3, "text-anchor": "end" }, clip(labels[j], (labelW - 10) / 7));
    text.append(el(SVG + "title", {}, labels[j]));
    svg.append(text);
    names.forEach((n, i) => {
      const v = r[i + 1], w = len(v), y = top + labelH + i * bar;
      svg.append(el(SVG + "rect", { class: "mark", x: labelW, y, width: w, height: bar - 2, fill: COLOURS[i % COLOURS.length] },
        el(SVG + "title", {}, `${labels[j]}, ${n}: ${fmtValue(v)}`)));
      svg.append(el(SVG + "text", { x: labelW + w + 4, y: y + bar / 2 + 3 }, fmtValue(v)));
    });
  });
  if (!stacked) svg.append(el(SVG + "line", { x1: labelW, x2: labelW, y1: 0, y2: H, stroke: "#888" }));
  const said = rows.slice(0, 8).map((r, j) => `${labels[j]}: ${names.map((n, i) => `${n} ${fmtValue(r[i + 1])}`).join(", ")}`);
  if (rows.length > 8) said.push(`and ${rows.length - 8} more`);
  svg.setAttribute("aria-label", `Bar chart of ${view.panel.title}, ${rows.length} ${rows.length === 1 ? "row" : "rows"}: ${said.join("; ")}.`);
  view.plot.replaceChildren(svg);
  if (H > room) { // scrollable by keyboard when it overflows
    view.plot.tabIndex = 0;
    view.plot.setAttribute("role", "region");
    view.plot.setAttribute("aria-label", view.panel.title);
  } else {
    for (const name of ["tabindex", "role", "aria-label"]) view.plot.removeAttribute(name);
  }
}

// ---- tables and helpers -----------------------------------------------------------------------

function tableView(view) {
  view.legend.replaceChildren();
  view.plot.replaceChildren(table(view.data, view.panel.title));
  view.plot.tabIndex = 0; // keyboard scrolling
  view.plot.setAttribute("role", "region");
  view.plot.setAttribute("aria-label", view.panel.title);
}

function fillDetails(view) {
  if (!view.data || !view.data.rows.length) return;
  const box = el("div", { class: "data", tabindex: "0" }, table(view.data, view.panel.title));
  view.details.replaceChildren(view.details.querySelector("summary"), box);
}

// Times (epoch ms in a `time`, `…_ms` or `…_at` column) as dates; numeric columns right-aligned.
function table({ kind, columns, rows }, title) {
  const type = columns.map((c, i) => {
    const vs = rows.map((r) => r[i]).filter((v) => v !== null && v !== undefined);
    if (!vs.length || !vs.every(isNum)) return "";
    return ((kind === "timeseries" && i === 0) || /(^time$|_ms$|_at$)/.test(c)) && vs.every((v) => Number(v) > 1e12) ? "time" : "num";
  });
  const t = el("table", {}, el("caption", { class: "vh" }, title));
  t.append(el("thead", {}, el("tr", {}, ...columns.map((c, i) => el("th", { scope: "col", class: type[i] }, label(c))))));
  const body = el("tbody");
  for (const r of rows) {
    body.append(el("tr", {}, ...r.map((v, i) =>
      el("td", { class: type[i] }, type[i] === "time" && isNum(v) ? TIME.full.format(Number(v)) : fmtValue(v)))));
  }
  t.append(body);
  return t;
}

function legendOf(view, names) {
  view.legend.replaceChildren(...names.map((n, i) =>
    el("li", {}, el("span", { class: "sw", style: `background:${COLOURS[i % COLOURS.length]}` }), n)));
}

// Round steps (1, 2, 5 × 10^k) from lo to hi, about `count` of them.
function niceTicks(lo, hi, count) {
  if (hi === lo) hi = lo + 1;
  const raw = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw);
  const ticks = [];
  for (let k = Math.floor(lo / step); ; k++) {
    ticks.push(Number((k * step).toPrecision(12)));
    if (k * step >= hi) return ticks;
  }
}

// Ticks on round local times (every 10 s … 1 day), at most `count`; dates at midnight.
function timeTicks(t0, t1, count) {
  const S = 1e3, M = 60e3, HR = 3600e3, D = 24 * HR;
  const steps = [S, 5 * S, 10 * S, 15 * S, 30 * S, M, 2 * M, 5 * M, 10 * M, 15 * M, 30 * M, HR, 2 * HR, 3 * HR, 6 * HR, 12 * HR, D, 2 * D, 7 * D];
  const step = steps.find((s) => (t1 - t0) / s <= count) || 7 * D;
  const d = new Date(t0);
  if (step < HR) d.setTime(Math.ceil(t0 / step) * step);
  else if (step < D) { d.setMinutes(0, 0, 0); d.setHours(Math.ceil(d.getHours() / (step / HR)) * (step / HR)); }
  else { d.setHours(0, 0, 0, 0); d.setDate(d.getDate() + 1); }
  const out = [];
  while (d.getTime() <= t1 && out.length < 50) {
    const t = d.getTime();
    if (t >= t0) {
      const midnight = d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0;
      out.push([t, step >= D || midnight ? TIME.d.format(t) : step < M ? TIME.s.format(t) : TIME.m.format(t)]);
    }
    if (step < HR) d.setTime(t + step);
    else if (step < D) d.setHours(d.getHours() + step / HR);
    else d.setDate(d.getDate() + step / D);
  }
  return out;
}

const isNum = (v) => v !== null && v !== "" && typeof v !== "boolean" && Number.isFinite(Number(v));
const fmtValue = (v) => (v === null || v === undefined ? "–" : isNum(v) ? num.format(Number(v)) : String(v));
const label = (column) => String(column).replaceAll("_", " ");
const clip = (s, n) => (s.length > n ? s.slice(0, Math.max(1, Math.floor(n) - 1)) + "…" : s);

function el(tag, attrs = {}, ...children) {
  const svg = tag.startsWith(SVG);
  const node = svg ? document.createElementNS(SVG, tag.slice(SVG.length) || "svg") : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ---- wiring -----------------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
if (Object.hasOwn(RANGES, params.get("range") ?? "")) $("range").value = params.get("range");
$("range").onchange = () => {
  history.replaceState(null, "", `?range=${$("range").value}`);
  refresh();
};
$("refresh").onclick = () => refresh();
setInterval(() => { if (document.visibilityState === "visible" && !state.busy) refresh(); }, REFRESH_MS);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && Date.now() - state.last > REFRESH_MS) refresh();
});
let drawn = 0;
new ResizeObserver(() => {
  const width = $("panels").clientWidth;
  if (width === drawn) return;
  drawn = width;
  for (const view of state.views.values()) if (view.data && view.width !== view.plot.clientWidth) draw(view);
}).observe($("panels"));
refresh();
