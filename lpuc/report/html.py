"""One self-contained HTML file of a program's report: the data as JSON in the page, drawn by inline
JavaScript on canvases and SVG (no network at view time, no library).

The timeline stays responsive for programs of tens of thousands of instructions because every redraw
touches only the instructions in view (binary search on each track's issue cycles, with a running
maximum of end cycles for the left edge), and instructions narrower than two pixels are not drawn one
by one: their cycles are binned per pixel column and the column drawn with opacity = the busy
fraction of its cycles.
"""

from __future__ import annotations

import html
import json
from typing import Any

UNIT_COLOURS = {"MEM": "#4e79a7", "VXM": "#f28e2b", "MXM": "#e15759", "SXM": "#76b7b2", "C2C": "#59a14f",
                "ICU": "#9c755f"}


def _json(doc: Any) -> str:
    """JSON safe inside a <script> element (no ``</``)."""
    return json.dumps(doc, separators=(",", ":")).replace("</", "<\\/")


def render(doc: dict[str, Any], title: str) -> str:
    """The HTML page of a report document (``lpuc.report.build``)."""
    return (_PAGE.replace("__TITLE__", html.escape(title))
            .replace("__COLOURS__", _json(UNIT_COLOURS))
            .replace("__DATA__", _json(doc)))


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:13px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px}
header .facts{display:flex;flex-wrap:wrap}
header .facts span{margin-right:18px;white-space:nowrap}
section{background:#fff;margin:12px 16px;padding:10px 14px;border:1px solid #ddd;border-radius:4px}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee;white-space:nowrap}
th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
.bar{display:inline-block;height:10px;background:#4e79a7;vertical-align:middle}
.bind{font-weight:bold;color:#c62828}
#tlwrap{position:relative;overflow-y:auto;max-height:640px;border:1px solid #ccc}
#tl{display:block;cursor:grab}
#tip{position:fixed;pointer-events:none;background:#263238;color:#fff;padding:4px 6px;border-radius:3px;
 font:12px monospace;display:none;z-index:9;white-space:pre}
.controls button,.controls select{margin-right:6px}
.note{color:#666;font-size:12px}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
#nodes{max-height:420px;overflow-y:auto;display:block}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid>div{flex:1 1 420px}
.cmp td.better{color:#2e7d32;font-weight:bold}
</style></head>
<body>
<header><h1 id="title"></h1><div class="facts" id="facts"></div></header>
<section id="s-floor"><h2>Floorplan</h2>
<div class="note">Positions west to east (a stream value moves one position a cycle); each box is a slice,
its fill the slice's busy fraction of the program's cycles.</div>
<div class="legend" id="legend"></div><div id="floor"></div></section>
<section id="s-timeline"><h2>Timeline</h2>
<div class="controls"><button id="fit">fit</button><button id="zin">zoom in</button><button id="zout">zoom out</button>
<label>tracks <select id="mode"><option value="slice">every slice</option><option value="unit">per unit</option></select></label>
<span class="note">wheel: zoom at the pointer; drag: pan; hover: the instruction. Narrow instructions are
binned per pixel (opacity = busy fraction).</span></div>
<div id="range" class="note"></div>
<div id="tlwrap"><canvas id="tl"></canvas></div></section>
<div class="grid">
<section id="s-util"><h2>Utilization</h2><div id="util"></div></section>
<section id="s-roof"><h2>Roofline</h2><div id="roof"></div></section>
</div>
<section id="s-energy" style="display:none"><h2>Energy and cost</h2><div id="energy"></div></section>
<section id="s-sram"><h2>SRAM occupancy over time</h2><canvas id="sram" height="220"></canvas>
<div class="note" id="sramnote"></div></section>
<section id="s-compare" style="display:none"><h2>Schedulers compared</h2><div id="compare"></div></section>
<section id="s-nodes"><h2>ONNX nodes</h2><div class="note">span: first issue to last end of the
node's instructions (cycles); busy: their slice-cycles summed. Click a header to sort, a row to show it
on the timeline.</div><table id="nodes"></table></section>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const COLOURS = __COLOURS__;
const D = JSON.parse(document.getElementById("data").textContent);
const P = D.programs[0];
const fmt = n => Math.round(n).toLocaleString("en-US");
const pct = x => (100 * x).toFixed(1) + "%";
function el(tag, attrs, text) { const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; }

// a unit-over-time strip (``lpuc.report.compare.unit_strip``): per unit, each bin's busy fraction as opacity;
// a red line where the program ends on the strip's cycle axis
function strip(parent, S) {
  const cv = el("canvas", {class: "strip"}); parent.appendChild(cv);
  const L = 60, ROWH = 14; cv.width = Math.max(400, parent.clientWidth - 10); cv.height = S.rows.length * ROWH + 2;
  const ctx = cv.getContext("2d"), w = cv.width - L; ctx.font = "10px monospace"; ctx.textBaseline = "middle";
  S.rows.forEach((r, i) => { const y = i * ROWH; ctx.fillStyle = "#f3f3f3"; ctx.fillRect(L, y, w, ROWH - 1);
    ctx.fillStyle = "#333"; ctx.fillText(r.unit, 2, y + ROWH / 2); ctx.fillStyle = COLOURS[r.unit] || "#888";
    const bw = w / r.bins.length;
    r.bins.forEach((f, b) => { if (f > 0) { ctx.globalAlpha = Math.min(1, 0.15 + 0.85 * f); ctx.fillRect(L + b * bw, y + 1, Math.max(1, bw), ROWH - 3); } });
    ctx.globalAlpha = 1; });
  ctx.strokeStyle = "#c62828"; const xe = L + w * S.cycles / S.axis; ctx.beginPath(); ctx.moveTo(xe, 0); ctx.lineTo(xe, cv.height); ctx.stroke();
}

// ---- header
document.getElementById("title").textContent = D.title;
const facts = document.getElementById("facts");
for (const [k, v] of D.facts) { const s = el("span"); s.textContent = k + ": " + v; facts.appendChild(s); }

// ---- floorplan (SVG from the chip config's slices)
(function floorplan() {
  const chip = P.chip, lg = document.getElementById("legend");
  for (const u in COLOURS) { const s = el("span"); const i = el("i"); i.style.background = COLOURS[u];
    s.appendChild(i); s.appendChild(document.createTextNode(u)); lg.appendChild(s); }
  const byPos = {}; let tallest = 1;
  for (const s of chip.slices) { (byPos[s.position] = byPos[s.position] || []).push(s);
    tallest = Math.max(tallest, byPos[s.position].length); }
  const W = Math.max(8, Math.min(22, Math.floor(1200 / chip.positions))), H = 12, top = 16;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const chips = P.chips;
  const util = (name) => { let t = 0; for (let c = 0; c < chips; c++) t += P.slice_util[c + ":" + name] || 0; return t / chips; };
  svg.setAttribute("width", chip.positions * W + 10); svg.setAttribute("height", top + tallest * H + 20);
  for (const pos in byPos) byPos[pos].forEach((s, k) => {
    const x = pos * W + 2, y = top + k * H;
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", x); r.setAttribute("y", y); r.setAttribute("width", W - 2); r.setAttribute("height", H - 2);
    r.setAttribute("fill", COLOURS[s.unit] || "#888"); r.setAttribute("fill-opacity", 0.12 + 0.88 * util(s.name));
    r.setAttribute("stroke", COLOURS[s.unit] || "#888");
    const t = document.createElementNS(ns, "title");
    t.textContent = s.name + " (" + s.unit + ") @" + s.position + ": busy " + pct(util(s.name));
    r.appendChild(t); svg.appendChild(r);
  });
  const lab = (x, text) => { const t = document.createElementNS(ns, "text"); t.setAttribute("x", x); t.setAttribute("y", 11);
    t.setAttribute("font-size", "10"); t.textContent = text; svg.appendChild(t); };
  lab(2, "west"); lab(chip.positions * W - 24, "east");
  const mid = chip.slices.find(s => s.hemisphere === "C"); if (mid) lab(mid.position * W - 6, "centre");
  document.getElementById("floor").appendChild(svg);
  if (chips > 1) {  // the system: chips on a circle, each link direction used drawn with its bytes
    const R = Math.min(160, 40 + 12 * chips), cx = R + 60, cy = R + 30, sys = document.createElementNS(ns, "svg");
    sys.setAttribute("width", 2 * cx); sys.setAttribute("height", 2 * cy);
    const at = c => [cx + R * Math.cos(2 * Math.PI * c / chips - Math.PI / 2), cy + R * Math.sin(2 * Math.PI * c / chips - Math.PI / 2)];
    const most = Math.max(1, ...P.links.map(l => l.bytes));
    for (const l of P.links) { const [x0, y0] = at(l.from[0]), [x1, y1] = at(l.to[0]);
      const ln = document.createElementNS(ns, "line"), off = l.from[0] < l.to[0] ? 3 : -3;
      ln.setAttribute("x1", x0 + off); ln.setAttribute("y1", y0 + off); ln.setAttribute("x2", x1 + off); ln.setAttribute("y2", y1 + off);
      ln.setAttribute("stroke", COLOURS.C2C); ln.setAttribute("stroke-width", 1 + 5 * l.bytes / most);
      const t = document.createElementNS(ns, "title");
      t.textContent = "chip " + l.from[0] + " link " + l.from[1] + " -> chip " + l.to[0] + " link " + l.to[1] + ": " + fmt(l.bytes) + " B sent";
      ln.appendChild(t); sys.appendChild(ln); }
    for (let c = 0; c < chips; c++) { const [x, y] = at(c), g = document.createElementNS(ns, "circle");
      g.setAttribute("cx", x); g.setAttribute("cy", y); g.setAttribute("r", 16); g.setAttribute("fill", "#263238");
      sys.appendChild(g); const t = document.createElementNS(ns, "text"); t.setAttribute("x", x); t.setAttribute("y", y + 4);
      t.setAttribute("text-anchor", "middle"); t.setAttribute("fill", "#fff"); t.setAttribute("font-size", "11"); t.textContent = "c" + c;
      sys.appendChild(t); }
    const f = document.getElementById("floor");
    f.appendChild(el("div", {class: "note"}, "The system: " + chips + " chips; a line per link direction used, its width the bytes sent (hover)."));
    f.appendChild(sys);
  }
})();

// ---- timeline
const TL = (function timeline() {
  const cv = document.getElementById("tl"), wrap = document.getElementById("tlwrap"), tip = document.getElementById("tip");
  const ctx = cv.getContext("2d"), LABEL = 96, ROW = 13, AXIS = 22, total = Math.max(P.cycles, 1);
  const multi = P.chips > 1;
  // a first row of the ONNX nodes' spans (first issue to last end of their instructions), by first cycle
  const nodeRow = {chip: 0, slice: "ONNX nodes", unit: "NODE", isNodes: true, start: [], end: [], op: [], node: [], names: []};
  for (const n of P.nodes.slice().sort((a, b) => a.first - b.first)) {
    nodeRow.start.push(n.first); nodeRow.end.push(Math.max(n.last, n.first + 1)); nodeRow.names.push(n.node); }
  // prefix maximum of end cycles: the first instruction that may reach into the view
  for (const t of [nodeRow, ...P.tracks]) { const m = new Array(t.end.length); let x = -1;
    for (let i = 0; i < t.end.length; i++) { x = Math.max(x, t.end[i]); m[i] = x; } t.maxEnd = m; }
  const unitRows = [];
  { const idx = {};
    for (const t of P.tracks) { const k = t.chip + ":" + t.unit;
      if (!(k in idx)) { idx[k] = unitRows.length; unitRows.push({chip: t.chip, slice: t.unit, unit: t.unit, members: []}); }
      unitRows[idx[k]].members.push(t); } }
  let mode = P.tracks.length > 300 ? "unit" : "slice";
  document.getElementById("mode").value = mode;
  let v0 = 0, v1 = total;
  const head = P.nodes.length ? [nodeRow] : [];
  const rows = () => head.concat(mode === "slice" ? P.tracks : unitRows);
  function lower(a, x) { let lo = 0, hi = a.length; while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] < x) lo = m + 1; else hi = m; } return lo; }
  function size() { const r = rows(); cv.width = Math.max(400, wrap.clientWidth - 2); cv.height = AXIS + r.length * ROW + 4; }
  function draw() {
    const t0 = performance.now();
    const r = rows(), w = cv.width - LABEL, scale = w / (v1 - v0);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, cv.width, cv.height);
    ctx.font = "10px monospace"; ctx.textBaseline = "middle";
    // axis
    const step = Math.pow(10, Math.floor(Math.log10((v1 - v0) / 6 || 1)));
    const tick = [1, 2, 5, 10].map(k => k * step).find(s => (v1 - v0) / s <= 10) || step * 10;
    ctx.fillStyle = "#444"; ctx.strokeStyle = "#eee";
    for (let c = Math.ceil(v0 / tick) * tick; c <= v1; c += tick) { const x = LABEL + (c - v0) * scale;
      ctx.fillText(fmt(c), x + 2, 10); ctx.beginPath(); ctx.moveTo(x, AXIS - 4); ctx.lineTo(x, cv.height); ctx.stroke(); }
    const bins = new Float32Array(w + 1);
    let marks = 0;  // instruction boxes and binned pixel columns drawn (the page's tests read it)
    r.forEach((row, k) => {
      const y = AXIS + k * ROW;
      ctx.fillStyle = k % 2 ? "#fbfbfb" : "#f3f3f3"; ctx.fillRect(LABEL, y, w, ROW - 1);
      ctx.fillStyle = "#333";
      ctx.fillText((multi && !row.isNodes ? "c" + row.chip + " " : "") + row.slice + (row.peer ? ">c" + row.peer[0] + "." + row.peer[1] : ""), 2, y + ROW / 2);
      const colour = COLOURS[row.unit] || "#888", members = row.members || [row];
      bins.fill(0);
      let binned = false;
      for (const t of members) {
        const i0 = lower(t.maxEnd, v0 + 1e-9), i1 = lower(t.start, v1);
        for (let i = i0; i < i1; i++) {
          const s = t.start[i], e = t.end[i];
          if (e <= v0) continue;
          const x0 = (Math.max(s, v0) - v0) * scale, x1 = (Math.min(e, v1) - v0) * scale;
          if (!row.members && (x1 - x0 >= 2 || row.isNodes)) {
            ctx.fillStyle = row.isNodes ? (i % 2 ? "#8e6c8a" : "#c9a0c0") : colour;
            ctx.fillRect(LABEL + x0, y + 1, Math.max(1, x1 - x0 - 0.5), ROW - 3); marks++;
            if (x1 - x0 > 40) { ctx.fillStyle = row.isNodes ? "#000" : "#fff"; ctx.save(); ctx.beginPath(); ctx.rect(LABEL + x0, y, x1 - x0, ROW); ctx.clip();
              ctx.fillText(row.isNodes ? t.names[i] : P.mnemonics[t.op[i]], LABEL + x0 + 2, y + ROW / 2); ctx.restore(); }
          } else {  // per-pixel binning: add the share of each pixel column the instruction covers
            binned = true;
            let p = Math.floor(x0);
            const pe = Math.min(w, Math.ceil(x1));
            for (; p < pe; p++) bins[p] += Math.min(x1, p + 1) - Math.max(x0, p);
          }
        }
      }
      if (binned) {
        ctx.fillStyle = colour;
        const n = members.length;
        for (let p = 0; p < w; p++) if (bins[p] > 0) { ctx.globalAlpha = Math.min(1, 0.15 + 0.85 * bins[p] / n);
          ctx.fillRect(LABEL + p, y + 1, 1, ROW - 3); marks++; }
        ctx.globalAlpha = 1;
      }
    });
    cv.setAttribute("data-marks", marks);
    cv.setAttribute("data-view", Math.round(v0) + "-" + Math.round(v1) + " " + mode);
    clearTimeout(draw.hash);  // (at most every 300 ms: browsers throttle rapid address changes)
    draw.hash = setTimeout(() => history.replaceState(null, "", "#mode=" + mode + "&view=" + Math.round(v0) + "-" + Math.round(v1)), 300);
    cv.setAttribute("data-draw-ms", (performance.now() - t0).toFixed(1));  // one redraw: what a zoom or pan costs
    document.getElementById("range").textContent = "cycles " + fmt(v0) + " .. " + fmt(v1) + " of " + fmt(total) +
      " (" + ((v1 - v0) / P.chip.clock_mhz).toFixed(3) + " us in view)";
  }
  function zoom(f, at) { const c = v0 + (at - LABEL) / (cv.width - LABEL) * (v1 - v0);
    let n0 = c - (c - v0) * f, n1 = c + (v1 - c) * f;
    if (n1 - n0 < 10) { n1 = n0 + 10; } if (n0 < 0) { n1 -= n0; n0 = 0; } if (n1 > total) { n0 -= n1 - total; n1 = total; }
    v0 = Math.max(0, n0); v1 = Math.min(total, n1); draw(); }
  cv.addEventListener("wheel", e => { e.preventDefault(); zoom(e.deltaY > 0 ? 1.25 : 0.8, e.offsetX); }, {passive: false});
  let drag = null;
  cv.addEventListener("mousedown", e => { drag = {x: e.clientX, v0, v1}; cv.style.cursor = "grabbing"; });
  window.addEventListener("mouseup", () => { drag = null; cv.style.cursor = "grab"; });
  window.addEventListener("mousemove", e => {
    if (drag) { const d = (e.clientX - drag.x) / (cv.width - LABEL) * (drag.v1 - drag.v0);
      let n0 = drag.v0 - d, n1 = drag.v1 - d; if (n0 < 0) { n1 -= n0; n0 = 0; } if (n1 > total) { n0 -= n1 - total; n1 = total; }
      v0 = n0; v1 = n1; draw(); tip.style.display = "none"; return; }
    if (e.target !== cv) { tip.style.display = "none"; return; }
    const r = rows(), k = Math.floor((e.offsetY - AXIS) / ROW), row = r[k];
    if (!row || e.offsetX < LABEL) { tip.style.display = "none"; return; }
    const c = v0 + (e.offsetX - LABEL) / (cv.width - LABEL) * (v1 - v0);
    let text = null;
    for (const t of row.members || [row]) {
      const i1 = lower(t.start, c + 1);
      for (let i = i1 - 1; i >= 0 && t.maxEnd[i] > c; i--) if (t.start[i] <= c && t.end[i] > c) {
        if (t.isNodes) { text = "node " + t.names[i] + "\ncycles " + fmt(t.start[i]) + " .. " + fmt(t.end[i]) + " (" +
          fmt(t.end[i] - t.start[i]) + ")"; break; }
        const node = t.node[i] >= 0 && P.node_names ? P.node_names[t.node[i]] : "";
        text = (multi ? "chip " + t.chip + " " : "") + t.slice + "  " + P.mnemonics[t.op[i]] + "\ncycles " + fmt(t.start[i]) +
          " .. " + fmt(t.end[i]) + " (" + fmt(t.end[i] - t.start[i]) + ")" + (node ? "\nnode " + node : ""); break; }
      if (text) break;
    }
    if (!text) { tip.style.display = "none"; return; }
    tip.textContent = text; tip.style.display = "block"; tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
  });
  document.getElementById("fit").onclick = () => { v0 = 0; v1 = total; draw(); };
  document.getElementById("zin").onclick = () => zoom(0.5, LABEL + (cv.width - LABEL) / 2);
  document.getElementById("zout").onclick = () => zoom(2, LABEL + (cv.width - LABEL) / 2);
  document.getElementById("mode").onchange = e => { mode = e.target.value; size(); draw(); };
  window.addEventListener("resize", () => { size(); draw(); });
  // a view given in the address (report.html#mode=unit&view=1000-5000): tracks and cycle range to open with,
  // so a view can be shared; the address follows the view as it changes
  { const h = new URLSearchParams(location.hash.slice(1));
    if (h.get("mode") === "unit" || h.get("mode") === "slice") { mode = h.get("mode"); document.getElementById("mode").value = mode; }
    const m = /^(\d+)-(\d+)$/.exec(h.get("view") || "");
    if (m && +m[2] > +m[1]) { v0 = Math.max(0, +m[1]); v1 = Math.min(total, +m[2]); } }
  size(); draw();
  return { show(a, b) { const pad = Math.max(5, (b - a) * 0.05); v0 = Math.max(0, a - pad); v1 = Math.min(total, b + pad); draw();
    document.getElementById("s-timeline").scrollIntoView(); }, drawn: () => P.tracks.length };
})();

// ---- utilization
(function utilTable() {
  const t = el("table"), h = el("tr");
  for (const c of ["unit", "busy cycles", "utilization", ""]) h.appendChild(el("th", {}, c)); t.appendChild(h);
  for (const u in P.units) { const r = el("tr"), v = P.units[u];
    r.appendChild(el("td", {}, u)); r.appendChild(el("td", {}, fmt(v.busy_cycles))); r.appendChild(el("td", {}, pct(v.utilization)));
    const b = el("td"), bar = el("span", {class: "bar"}); bar.style.width = (200 * v.utilization) + "px";
    bar.style.background = COLOURS[u] || "#888"; b.appendChild(bar); r.appendChild(b); t.appendChild(r); }
  const div = document.getElementById("util"); div.appendChild(t);
  div.appendChild(el("div", {class: "note"}, "busy cycles: a slice is busy while any of its ports is, summed over the unit's slices" +
    (P.chips > 1 ? " and chips" : "") + "; utilization = busy / (cycles x slices" + (P.chips > 1 ? " x chips" : "") + ")"));
  if (P.strip && P.strip.rows.length) {
    const bins = P.strip.rows[0].bins.length;
    div.appendChild(el("div", {class: "note"}, "over time: each unit's busy fraction in " + bins + " bins of " +
      (P.strip.axis / bins).toFixed(1) + " cycles"));
    strip(div, P.strip); }
})();

// ---- roofline
(function roof() {
  const div = document.getElementById("roof"), parts = P.meta.roofline_parts;
  if (!parts) { div.appendChild(el("div", {class: "note"}, "The program records no roofline (a hand-written program: compile a model to get one).")); return; }
  const sets = typeof Object.values(parts)[0] === "object" ? parts : {"": parts};
  for (const name in sets) {
    const ps = sets[name], bound = Math.max(...Object.values(ps)), top = Math.max(bound, P.cycles);
    if (name) div.appendChild(el("div", {}, "chip " + name));
    const t = el("table");
    for (const k in ps) { const r = el("tr"), bind = ps[k] === bound;
      r.appendChild(el("td", bind ? {class: "bind"} : {}, k + (bind ? " (binds)" : ""))); r.appendChild(el("td", {}, fmt(ps[k])));
      const b = el("td"), bar = el("span", {class: "bar"}); bar.style.width = (240 * ps[k] / top) + "px";
      if (bind) bar.style.background = "#c62828"; b.appendChild(bar); r.appendChild(b); t.appendChild(r); }
    const r = el("tr"); r.appendChild(el("td", {}, "predicted cycles")); r.appendChild(el("td", {}, fmt(P.cycles)));
    const b = el("td"), bar = el("span", {class: "bar"}); bar.style.width = (240 * P.cycles / top) + "px"; bar.style.background = "#555";
    b.appendChild(bar); r.appendChild(b); t.appendChild(r);
    div.appendChild(t);
    div.appendChild(el("div", {class: "note"}, "No schedule is shorter than any part; the largest binds. predicted / bound = " +
      (P.cycles / Math.max(bound, 1)).toFixed(2)));
  }
})();

// ---- energy and cost
(function energy() {
  if (!D.energy) return;
  const s = document.getElementById("s-energy"); s.style.display = "";
  const t = el("table"), E = D.energy;
  const h = el("tr"); for (const c of ["part", "joules", "share"]) h.appendChild(el("th", {}, c)); t.appendChild(h);
  for (const k in E.parts_j) { const r = el("tr"); r.appendChild(el("td", {}, k)); r.appendChild(el("td", {}, E.parts_j[k].toExponential(3)));
    r.appendChild(el("td", {}, pct(E.parts_j[k] / Math.max(E.joules, 1e-30)))); t.appendChild(r); }
  const div = document.getElementById("energy"); div.appendChild(t);
  for (const line of E.lines) div.appendChild(el("div", {}, line));
})();

// ---- SRAM occupancy
(function sram() {
  const cv = document.getElementById("sram"), ctx = cv.getContext("2d"), S = P.sram;
  cv.width = Math.max(400, cv.parentElement.clientWidth - 30);
  const L = 70, W = cv.width - L - 10, H = cv.height - 30;
  let top = 1; for (const b of S.bytes) for (const x of b) top = Math.max(top, x);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, cv.width, cv.height);
  ctx.strokeStyle = "#ccc"; ctx.strokeRect(L, 5, W, H); ctx.fillStyle = "#444"; ctx.font = "10px monospace";
  ctx.fillText((top / 1048576).toFixed(2) + " MiB", 2, 12); ctx.fillText("0", 2, H + 5);
  ctx.fillText("cycle 0", L, H + 20); ctx.fillText(fmt(P.cycles), L + W - 50, H + 20);
  const palette = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"];
  S.bytes.forEach((b, c) => { ctx.strokeStyle = palette[c % palette.length]; ctx.beginPath();
    b.forEach((v, i) => { const x = L + W * i / b.length, y = 5 + H - H * v / top; if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      ctx.lineTo(L + W * (i + 1) / b.length, y); }); ctx.stroke(); });
  let peak = 0; for (const b of S.bytes) for (const x of b) peak = Math.max(peak, x);
  document.getElementById("sramnote").textContent = "peak " + fmt(peak) + " B of " + fmt(S.capacity) + " B per chip (" +
    pct(peak / S.capacity) + "); a word is occupied from each write to its last read (inputs and constants from the start, " +
    "outputs to the end); bins of " + S.bin_cycles.toFixed(1) + " cycles" + (P.chips > 1 ? "; one line per chip" : "");
})();

// ---- ONNX nodes
(function nodes() {
  const t = document.getElementById("nodes"), cols = ["node", "first", "last", "span", "instructions", "busy"];
  let key = "first", asc = true;
  function fill() {
    t.textContent = "";
    const h = el("tr"); for (const c of cols) { const th = el("th", {}, c + (c === key ? (asc ? " ^" : " v") : ""));
      th.onclick = () => { asc = key === c ? !asc : c === "node" || c === "first"; key = c; fill(); }; h.appendChild(th); } t.appendChild(h);
    const rs = P.nodes.slice().sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0) * (asc ? 1 : -1));
    for (const n of rs) { const r = el("tr"); for (const c of cols) r.appendChild(el("td", {}, typeof n[c] === "number" ? fmt(n[c]) : n[c]));
      r.onclick = () => TL.show(n.first, n.last); t.appendChild(r); }
  }
  if (!P.nodes.length) { t.appendChild(el("tr")).appendChild(el("td", {}, "no instruction names an ONNX node")); return; }
  fill();
})();

// ---- scheduler comparison
(function compare() {
  if (!D.compare) return;
  document.getElementById("s-compare").style.display = "";
  const div = document.getElementById("compare"), C = D.compare;
  const t = el("table", {class: "cmp"}), h = el("tr"); h.appendChild(el("th", {}, ""));
  for (const s of C.schedulers) h.appendChild(el("th", {}, s)); t.appendChild(h);
  for (const row of C.rows) { const r = el("tr"); r.appendChild(el("td", {}, row.label));
    const best = row.lower_is_better ? Math.min(...row.values) : null;
    for (const v of row.values) r.appendChild(el("td", v === best && row.values.some(x => x !== best) ? {class: "better"} : {},
      typeof v === "number" ? (Number.isInteger(v) ? fmt(v) : Math.abs(v) >= 100 ? v.toFixed(1) : String(+v.toPrecision(4))) : v));
    t.appendChild(r); }
  div.appendChild(t);
  // what each scheduler saves phase by phase (``lpuc.report.compare.phases``): an ONNX node's span
  if (C.phases) for (const [title, rows] of [["phases by ONNX op: node spans summed (node-cycles), change against " +
      C.schedulers[0], C.phases.by_op], ["the ONNX nodes whose spans differ most (cycles), change against " +
      C.schedulers[0], C.phases.nodes]]) {
    div.appendChild(el("div", {class: "note"}, title));
    const pt = el("table", {class: "cmp"}), ph = el("tr"); ph.appendChild(el("th", {}, "phase"));
    for (const s of C.schedulers) ph.appendChild(el("th", {}, s)); pt.appendChild(ph);
    for (const r of rows) { const tr = el("tr"); tr.appendChild(el("td", {}, r.phase));
      r.spans.forEach((v, k) => tr.appendChild(el("td", k && r.saved[k] > 0 ? {class: "better"} : {},
        fmt(v) + (k ? " (" + (r.saved[k] > 0 ? "-" : "+") + fmt(Math.abs(r.saved[k])) + ")" : ""))));
      pt.appendChild(tr); }
    div.appendChild(pt);
  }
  for (const line of C.notes) div.appendChild(el("div", {class: "note"}, line));
  // the schedules side by side on one cycle axis: per unit, the busy fraction of its slices in each bin
  C.strips.forEach((S, k) => {
    div.appendChild(el("div", {}, C.schedulers[k] + ": " + fmt(S.cycles) + " cycles"));
    strip(div, S);
  });
})();
window.REPORT_READY = {tracks: TL.drawn(), instructions: P.instructions};
document.body.setAttribute("data-ready", "1");
document.body.setAttribute("data-load-ms", Math.round(performance.now()));  // page start to everything drawn
</script></body></html>
"""
