// A small self-written SVG chart: a metric's buckets over time (average line, min-max band)
// and a limit line. No library, no network. Each point is a <circle data-t data-v> so the
// values can be read back (tests, screen readers).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

// points: [{t: Date, avg, min, max}] sorted by t; opts: {limit, limitLabel, width, height, fmtTime}
function drawChart(host, points, opts) {
  const W = opts.width || 1600, H = opts.height || 520, L = 90, R = 30, T = 20, B = 60;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  host.replaceChildren(svg);
  if (!points.length) return svg;
  // The x axis spans the requested range (opts.start, opts.end), not just the data.
  const t0 = opts.start ? opts.start.getTime() : points[0].t.getTime();
  const t1 = opts.end ? opts.end.getTime() : points[points.length - 1].t.getTime();
  let lo = Math.min(...points.map((p) => p.min)), hi = Math.max(...points.map((p) => p.max));
  if (opts.limit != null) { lo = Math.min(lo, opts.limit); hi = Math.max(hi, opts.limit); }
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad; hi += pad;
  const x = (t) => L + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - L - R) : (W - L - R) / 2);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  for (const v of niceTicks(lo, hi, 6)) {
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: L - 10, y: y(v) + 6, class: "tick", "text-anchor": "end" }, String(v)));
  }
  for (let i = 0; i <= 6; i++) {
    const at = t0 + ((t1 - t0) * i) / 6;
    svg.append(svgEl("text", { x: x(at), y: H - 20, class: "tick", "text-anchor": i === 0 ? "start" : i === 6 ? "end" : "middle" }, opts.fmtTime(new Date(at))));
  }
  if (points.some((p) => p.max !== p.min)) {
    const up = points.map((p) => `${x(p.t.getTime())},${y(p.max)}`);
    const down = points.slice().reverse().map((p) => `${x(p.t.getTime())},${y(p.min)}`);
    svg.append(svgEl("polygon", { points: up.concat(down).join(" "), class: "band" }));
  }
  svg.append(svgEl("polyline", { points: points.map((p) => `${x(p.t.getTime())},${y(p.avg)}`).join(" "), class: "line" }));
  if (opts.limit != null) {
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(opts.limit), y2: y(opts.limit), class: "limit" }));
    svg.append(svgEl("text", { x: W - R, y: y(opts.limit) - 8, class: "limit-label", "text-anchor": "end" }, `${opts.limitLabel} ${opts.limit}`));
  }
  for (const p of points) {
    const c = svgEl("circle", { cx: x(p.t.getTime()), cy: y(p.avg), r: points.length > 200 ? 2 : 5, class: "pt", "data-t": p.t.toISOString(), "data-v": String(p.avg) });
    c.append(svgEl("title", {}, `${opts.fmtTime(p.t)}  ${+p.avg.toFixed(3)} (${+p.min.toFixed(3)}…${+p.max.toFixed(3)})`));
    svg.append(c);
  }
  return svg;
}
