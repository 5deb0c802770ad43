// The control room and the departments' consoles (one page; what it shows follows the token).
// Alerts come from the API, then live over SSE (EventSource); after every (re)connection the
// open alerts are reloaded, so nothing missed while away is lost. While the page is not live it
// says so with a full-width red banner and a sound of its own; a refused token says so too.
// Unacknowledged critical alerts sound an alarm (WebAudio) every 1.5 s until acknowledged;
// muting is per screen, visible, and ended by the next new critical alert.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
const S = {
  token: store.getItem("anju.token") || "",
  lang: store.getItem("anju.lang") || "zh",
  me: null,
  alerts: new Map(),
  live: false,
  refused: false,
  notLiveSince: Date.now(),
  es: null,
  retryMs: 1000,
  retryTimer: null,
  selected: null,
  tab: "alerts",
  communities: [],
  elevators: [],
  devices: [],
  started: false,
  checks: 0,
  loadedOnce: false,
};
const SEV_RANK = { critical: 0, major: 1, minor: 2, info: 3 };
const PAGE_ROWS = 200;
S.shown = PAGE_ROWS;

// ---- words ----------------------------------------------------------------------------------
const zh = () => S.lang === "zh";
const t = (key) => (I18N[S.lang] && I18N[S.lang][key]) || I18N.zh[key] || key;
const pair = (table, key) => (table[key] ? table[key][zh() ? 0 : 1] : key);
function titleOf(a) {
  const m = /^(.*?[^\sA-Za-z])\s+([A-Za-z].*)$/.exec(a.title || "");
  if (!m) return a.title || a.type;
  return zh() ? m[1] : m[2];
}
function pad2(n) { return String(n).padStart(2, "0"); }
function fmtTime(iso) {
  if (!iso) return t("never");
  const d = new Date(iso);
  return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}
function fmtShort(d) { return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`; }
function fmtDur(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}${t("ago_s")}`;
  if (s < 3600) return `${Math.floor(s / 60)}${t("ago_m")}${pad2(s % 60)}${t("ago_s")}`;
  if (s < 86400) return `${Math.floor(s / 3600)}${t("ago_h")}${pad2(Math.floor((s % 3600) / 60))}${t("ago_m")}`;
  return `${Math.floor(s / 86400)}${t("ago_d")}${Math.floor((s % 86400) / 3600)}${t("ago_h")}`;
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// ---- the API --------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, detail) { super(`${status} ${detail}`); this.status = status; this.detail = detail; }
}
async function api(path, opts = {}) {
  const headers = { "Content-Type": "application/json" };
  if (S.token) headers.Authorization = "Bearer " + S.token;
  const r = await fetch(path, { ...opts, headers, cache: "no-store" });
  if (!r.ok) {
    let detail = r.statusText;
    try { const j = await r.json(); detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, detail);
  }
  return r.json();
}

// ---- sound ----------------------------------------------------------------------------------
const anjuAlarm = (window.anjuAlarm = { playing: false, muted: store.getItem("anju.muted") === "1", lost: false, beeps: 0, lostBeeps: 0, ctx: null });
function audio() {
  if (!anjuAlarm.ctx) {
    try { anjuAlarm.ctx = new AudioContext(); } catch (e) { return null; }
  }
  return anjuAlarm.ctx;
}
function tone(freqs, each, gain) {
  const ctx = audio();
  if (!ctx || ctx.state !== "running") return false;
  let at = ctx.currentTime;
  for (const f of freqs) {
    const o = ctx.createOscillator(), g = ctx.createGain();
    o.type = "square"; o.frequency.value = f; o.connect(g); g.connect(ctx.destination);
    g.gain.setValueAtTime(gain, at); g.gain.setValueAtTime(0, at + each * 0.9);
    o.start(at); o.stop(at + each); at += each;
  }
  return true;
}
function needsAlarm(a) {
  return a.state !== "resolved" && a.severity === "critical" && !ackedByMe(a);
}
function ackedByMe(a) {
  if (!S.me) return false;
  if (S.me.admin) return a.acks.length > 0;
  return a.acks.some((k) => k.audience === S.me.audience);
}
function soundTick() {
  const ctx = audio();
  const locked = !ctx || ctx.state !== "running";
  $("sound-locked").hidden = !locked || !S.started;
  const lost = S.started && !S.live && Date.now() - S.notLiveSince > 4000;
  anjuAlarm.lost = lost;
  const wanted = [...S.alerts.values()].some(needsAlarm);
  anjuAlarm.playing = wanted && !anjuAlarm.muted && !locked;
  if (lost) {
    // Lost data is louder than an alarm, and not muted by the alarm's mute.
    if (tone([220, 440, 220, 440], 0.3, 0.5)) anjuAlarm.lostBeeps++;
  } else if (anjuAlarm.playing) {
    if (tone([988, 740], 0.35, 0.35)) anjuAlarm.beeps++;
  }
}
function setMuted(m) {
  anjuAlarm.muted = m;
  store.setItem("anju.muted", m ? "1" : "0");
  renderMute();
  soundTick();
}
function renderMute() {
  const b = $("mute");
  b.textContent = anjuAlarm.muted ? t("muted") : t("mute");
  b.classList.toggle("muted", anjuAlarm.muted);
  b.setAttribute("aria-pressed", anjuAlarm.muted ? "true" : "false");
}
function unlockAudio() {
  const ctx = audio();
  if (ctx && ctx.state !== "running") ctx.resume().then(soundTick, () => {});
}

// ---- liveness -------------------------------------------------------------------------------
function setLive(live) {
  if (live && !S.live) S.retryMs = 1000;
  if (live && !window.anjuScreen.liveAt) window.anjuScreen.liveAt = performance.now(); // first time live, rows on screen
  if (!live && S.live) S.notLiveSince = Date.now();
  S.live = live;
  window.anjuScreen.live = live;
  document.body.classList.toggle("live", live && !S.refused);
  document.body.classList.toggle("not-live", !live && !S.refused);
  $("live").textContent = S.refused ? t("not_live") : live ? t("live") : t("not_live");
  $("banner-text").textContent = S.refused ? t("banner_refused") : S.started ? t("banner_lost") : t("connecting");
  renderEmpty();
  soundTick();
}
function setRefused(status) {
  S.refused = true;
  window.anjuScreen.refused = true;
  if (S.es) { S.es.close(); S.es = null; }
  clearTimeout(S.retryTimer);
  document.body.classList.add("refused");
  setLive(false);
  showLogin(status === 403 ? t("login_403") : t("login_401"));
}
function scheduleReconnect() {
  clearTimeout(S.retryTimer);
  const wait = Math.min(S.retryMs, 10000) * (0.5 + Math.random() / 2);
  S.retryMs = Math.min(S.retryMs * 2, 10000);
  S.retryTimer = setTimeout(async () => {
    try {
      await api("/api/status/me");
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return setRefused(e.status);
      return scheduleReconnect();
    }
    connect();
  }, wait);
}
function connect() {
  if (S.es) S.es.close();
  const url = "/api/alerts/stream" + (S.token ? "?access_token=" + encodeURIComponent(S.token) : "");
  const es = (S.es = new EventSource(url));
  es.addEventListener("alert", (e) => { if (es === S.es) upsert(JSON.parse(e.data), true); });
  es.onopen = async () => {
    try {
      await reload();
      if (es === S.es) setLive(true);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return setRefused(e.status);
      setLive(false);
      es.close();
      scheduleReconnect();
    }
  };
  es.onerror = () => {
    if (es !== S.es) return;
    setLive(false);
    es.close(); // our own backoff, a token check, then a reload on the next open
    scheduleReconnect();
  };
}
async function watchdog() {
  // Comments keep the stream open but EventSource cannot see them: check the API as well.
  if (!S.started || S.refused) return;
  try {
    await api("/api/status/me");
    // Once a minute, reload the list anyway: the stream drops the oldest change for a client
    // that falls 256 behind (anju_alert_live_dropped_total); this is how such a screen heals.
    if (S.live && ++S.checks % 6 === 0) await reload();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return setRefused(e.status);
    if (S.live) { setLive(false); if (S.es) S.es.close(); S.es = null; scheduleReconnect(); }
  }
}

// ---- alerts ---------------------------------------------------------------------------------
async function reload() {
  const list = await api("/api/alerts?open_only=true&limit=1000");
  const seen = new Set(list.map((a) => a.id));
  for (const a of list) upsert(a, false);
  // Open here but not any more there: resolved while we were away; fetch how it ended.
  for (const [id, a] of [...S.alerts]) {
    if (a.state === "resolved" || seen.has(id)) continue;
    try { upsert(await api("/api/alerts/" + id), false); } catch (e) { S.alerts.delete(id); }
  }
  S.loadedOnce = true;
  renderAlerts();
}
function upsert(a, live) {
  const before = S.alerts.get(a.id);
  if (before && Date.parse(before.updated_at) > Date.parse(a.updated_at)) return;
  S.alerts.set(a.id, a);
  // A critical alert new to this screen (live, or found by a reload after a gap) ends a mute.
  if (!before && S.loadedOnce && needsAlarm(a) && anjuAlarm.muted) setMuted(false);
  if (!before && needsAlarm(a)) setTimeout(soundTick, 0);
  if (S.selected === a.id && !$("detail").hidden) openDetail(a.id, false);
  scheduleRender();
}
function sorted() {
  return [...S.alerts.values()].sort((a, b) =>
    (a.state === "resolved") - (b.state === "resolved") ||
    SEV_RANK[a.severity] - SEV_RANK[b.severity] ||
    needsAlarm(b) - needsAlarm(a) ||
    Date.parse(b.raised_at) - Date.parse(a.raised_at));
}
let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderAlerts(); if (S.tab === "communities") renderSchematic(); });
}
function deadlineOf(a) {
  if (a.severity !== "critical" || a.state === "resolved" || a.acks.some((k) => k.audience === "property")) return null;
  if (a.state === "escalated" || (a.evidence && a.evidence.escalated)) return "escalated";
  const d = S.me && S.me.ack_deadline_s ? (a.type.startsWith("fire.") ? S.me.ack_deadline_s.fire : S.me.ack_deadline_s.default) : 300;
  return Date.parse(a.raised_at) + d * 1000;
}
function chips(a) {
  const span = el("span");
  for (const x of a.audiences) {
    const ack = a.acks.find((k) => k.audience === x.audience);
    span.append(el("span", { class: "chip" + (ack ? " acked" : ""), title: ack ? `${ack.by} ${fmtTime(ack.at)} ${ack.note || ""}` : t("told") },
      (ack ? "✓ " : "") + pair(AUDIENCE, x.audience)));
  }
  return span;
}
function renderAlerts() {
  const rows = $("rows");
  const list = sorted();
  const frag = document.createDocumentFragment();
  const open = list.filter((a) => a.state !== "resolved").length;
  // The most urgent PAGE_ROWS rows first (a wall shows ~20); the rest one key or click away,
  // counted on a red line: never hidden silently, never 1,000 rows laid out every second.
  for (const a of list.slice(0, S.shown)) {
    const cls = [a.severity, a.state, needsAlarm(a) ? "flash" : "", a.id === S.selected ? "sel" : ""].join(" ");
    const tr = el("tr", { class: cls, "data-id": a.id, tabindex: "-1", onclick: () => { select(a.id); openDetail(a.id, true); } },
      el("td", { class: "level" }, pair(SEVERITY, a.severity)),
      el("td", { class: "title" }, titleOf(a)),
      el("td", { class: "where" }, `${a.community_name} · ${a.location || (a.building ? a.building + t("building") : a.device_id)}`),
      el("td", { class: "state state-" + a.state }, pair(STATE, a.state)),
      el("td", { class: "told" }, chips(a)),
      el("td", { class: "time", title: `${t("occurred")} ${fmtTime(a.occurred_at)}` }, fmtTime(a.raised_at)),
      el("td", { class: "age", "data-since": a.raised_at }, ""),
      el("td", { class: "deadline" }, ""),
      el("td", {}, a.state !== "resolved" && !ackedByMe(a)
        ? el("button", { class: "ack", onclick: (e) => { e.stopPropagation(); quickAck(a.id); } }, t("ack")) : null));
    frag.append(tr);
  }
  const rest = list.slice(S.shown);
  if (rest.length) {
    const crit = rest.filter(needsAlarm).length;
    frag.append(el("tr", { class: "more" }, el("td", { colspan: "9" },
      el("button", { id: "more", onclick: () => { S.shown += PAGE_ROWS; renderAlerts(); } },
        `${t("more")} ${rest.length}${crit ? ` (${pair(SEVERITY, "critical")} ${crit})` : ""} · +${PAGE_ROWS}`))));
  }
  rows.replaceChildren(frag);
  $("open-count").textContent = String(open);
  window.anjuScreen.rendered = performance.now();
  renderEmpty();
  tickRows();
}
function renderEmpty() {
  const e = $("empty");
  const open = [...S.alerts.values()].some((a) => a.state !== "resolved");
  if (S.live && !S.refused) {
    e.className = "all-clear";
    e.textContent = open ? "" : t("no_open");
  } else {
    e.className = "no-data";
    e.textContent = t("no_data");
  }
}
function tickRows() {
  const now = Date.now();
  for (const tr of $("rows").children) {
    const a = S.alerts.get(tr.dataset.id);
    if (!a) continue;
    tr.children[6].textContent = fmtDur((a.resolved_at ? Date.parse(a.updated_at) : now) - Date.parse(a.raised_at));
    const d = deadlineOf(a), cell = tr.children[7];
    if (d === null) { cell.textContent = t("nobody"); cell.classList.remove("soon"); }
    else if (d === "escalated") { cell.textContent = t("escalated"); cell.classList.add("soon"); }
    else { cell.textContent = d > now ? fmtDur(d - now) : t("overdue"); cell.classList.toggle("soon", d - now < 60000); }
  }
}
function select(id) {
  S.selected = id;
  for (const tr of $("rows").children) tr.classList.toggle("sel", tr.dataset.id === id);
  const tr = $("rows").querySelector(`tr[data-id="${id}"]`);
  if (tr) { tr.focus({ preventScroll: true }); tr.scrollIntoView({ block: "nearest" }); }
}
function moveSelection(step) {
  const ids = [...$("rows").children].map((tr) => tr.dataset.id).filter(Boolean);
  if (!ids.length) return;
  const i = ids.indexOf(S.selected);
  if (step > 0 && i === ids.length - 1 && $("more")) { $("more").click(); return moveSelection(step); }
  select(ids[Math.max(0, Math.min(ids.length - 1, i < 0 ? 0 : i + step))]);
}
function audienceChoice(a) {
  // An admin acknowledges on behalf of one of the alert's audiences (property by default).
  const left = a.audiences.map((x) => x.audience).filter((x) => !a.acks.some((k) => k.audience === x));
  return left.includes("property") ? "property" : left[0] || null;
}
async function quickAck(id) {
  const a = S.alerts.get(id);
  if (!a) return;
  if (S.me && S.me.admin) { select(id); return openDetail(id, true); }
  await doAck(id, "", null);
}
async function doAck(id, note, audience) {
  const body = { by: store.getItem("anju.by") || "", note };
  if (audience) body.audience = audience;
  try {
    upsert(await api(`/api/alerts/${id}/ack`, { method: "POST", body: JSON.stringify(body) }), false);
    return null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) setRefused(401);
    return `${t("ack_failed")}: ${e.message}`;
  }
}
async function doResolve(id, note) {
  try {
    upsert(await api(`/api/alerts/${id}/resolve`, { method: "POST", body: JSON.stringify({ by: store.getItem("anju.by") || "", note }) }), false);
    return null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) setRefused(401);
    return `${t("resolve_failed")}: ${e.message}`;
  }
}

// ---- detail ---------------------------------------------------------------------------------
function sentence(a) {
  const v = a.evidence || {};
  const Z = zh();
  const num = (x) => (typeof x === "number" ? +x.toFixed(1) : x);
  if (a.type === "elevator.trapped" || a.type === "elevator.stopped_outside_door_zone") {
    const f = v.floor;
    const where = v.in_door_zone === false && typeof f === "number"
      ? (Z ? `停在${f}楼与${f + 1}楼之间` : `stopped between floors ${f} and ${f + 1}`)
      : (Z ? `停在${f ?? "?"}楼` : `stopped at floor ${f ?? "?"}`);
    const door = v.door === "closed" ? (Z ? "门关闭" : "door closed") : v.door === "open" ? (Z ? "门开着" : "door open") : "";
    const pax = v.passenger ? (Z ? "轿厢内有乘客" : "a passenger inside") : "";
    const s = v.stopped_s != null ? (Z ? `已停${Math.round(v.stopped_s)}秒` : `for ${Math.round(v.stopped_s)} s`) : "";
    return Z ? `电梯${where}，${[door, pax, s].filter(Boolean).join("，")}` : `The elevator ${where} with the ${[door, pax].filter(Boolean).join(", ")} ${s}`;
  }
  if (a.type === "fire.alarm") {
    const conf = v.confirmed ? (Z ? "已由第二个探测器确认" : "confirmed by a second trigger") : (Z ? "首次触发，尚未二次确认" : "first trigger, not yet confirmed");
    return Z ? `${pair(KIND, a.device_kind)}在${a.location || a.building + "号楼"}报警，${conf}` : `${pair(KIND, a.device_kind)} alarm at ${a.location || "building " + a.building}, ${conf}`;
  }
  if (a.type === "fire.water_pressure_low") {
    return Z ? `水压${num(v.pressure_mpa)} MPa，低于下限${num(v.min_mpa)} MPa` : `pressure ${num(v.pressure_mpa)} MPa, below the minimum ${num(v.min_mpa)} MPa`;
  }
  const parts = Object.entries(v).filter(([k]) => k !== "escalated").map(([k, x]) =>
    `${pair(EVIDENCE_WORDS, k)}: ${typeof x === "object" ? JSON.stringify(x) : num(x)}`);
  return parts.join(Z ? "；" : "; ");
}
async function openDetail(id, fetchAudit) {
  S.selected = id;
  const a = S.alerts.get(id);
  if (!a) return;
  const body = $("detail-body");
  $("detail").hidden = false;
  document.body.classList.add("detail-open");
  const todo = TODO[a.type] || TODO[a.type.split(".")[0]];
  // A change of the alert redraws the panel: keep the note being typed (and its focus).
  const old = $("ack-note");
  const keep = old && old.dataset.id === id ? { text: old.value, focus: document.activeElement === old } : null;
  const note = el("textarea", { id: "ack-note", rows: "2", placeholder: t("note"), "data-id": id });
  if (keep) note.value = keep.text;
  const by = el("input", { id: "ack-by", value: store.getItem("anju.by") || "", placeholder: t("by"), size: "10", oninput: (e) => store.setItem("anju.by", e.target.value) });
  const err = el("p", { class: "error", id: "detail-error" });
  const actions = el("div", { class: "actions" }, el("label", {}, t("by") + " ", by));
  let audSel = null;
  if (a.state !== "resolved" && S.me && S.me.admin) {
    const left = a.audiences.map((x) => x.audience).filter((x) => !a.acks.some((k) => k.audience === x));
    if (left.length) {
      audSel = el("select", { id: "ack-audience", "aria-label": t("choose_audience") }, ...left.map((x) => el("option", { value: x }, pair(AUDIENCE, x))));
      audSel.value = audienceChoice(a);
      actions.append(el("label", {}, t("on_behalf") + " ", audSel));
    } else actions.append(el("span", {}, t("all_acked")));
  }
  if (a.state !== "resolved" && (!ackedByMe(a) || (S.me && S.me.admin && audSel))) {
    actions.append(el("button", { id: "ack-btn", onclick: async () => {
      err.textContent = await doAck(id, note.value, audSel ? audSel.value : null) || "";
    } }, t("ack") + " (A)"));
  }
  if (a.state !== "resolved" && S.me && S.me.can_resolve) {
    actions.append(el("button", { id: "resolve-btn", onclick: async () => { err.textContent = await doResolve(id, note.value) || ""; } }, t("resolve") + " (R)"));
  }
  const ol = el("ol", { id: "timeline" });
  body.replaceChildren(
    el("h2", {}, `${pair(SEVERITY, a.severity)} · ${titleOf(a)}`),
    el("p", { class: "state-" + a.state }, `${pair(STATE, a.state)} · ${a.type}`),
    el("h3", {}, t("evidence")), el("p", { class: "sentence", id: "sentence" }, sentence(a)),
    el("dl", {},
      el("dt", {}, t("device")), el("dd", {}, `${pair(KIND, a.device_kind)} ${a.device_id}`),
      el("dt", {}, t("location")), el("dd", {}, [a.community_name, a.building ? a.building + t("building") : "", a.location || ""].filter(Boolean).join(" · ")),
      el("dt", {}, t("occurred")), el("dd", {}, fmtTime(a.occurred_at)),
      el("dt", {}, t("col_time")), el("dd", {}, fmtTime(a.raised_at)),
      el("dt", {}, t("col_told")), el("dd", {}, chips(a))),
    el("h3", {}, t("todo")), el("p", { class: "todo" }, todo ? todo[zh() ? 0 : 1] : "—"),
    note, actions, err,
    el("h3", {}, t("timeline")), ol);
  if (keep && keep.focus) note.focus();
  if (fetchAudit !== false) await refreshAudit(id);
  else if (lastAudit.id === id) fillAudit(lastAudit.entries);
}
let lastAudit = { id: null, entries: [] };
function fillAudit(entries) {
  const ol = $("timeline");
  if (ol) ol.replaceChildren(...entries.map((e) => el("li", {}, `${fmtTime(e.at)} · ${pair(STATE, e.action)} · ${e.actor}`)));
}
async function refreshAudit(id) {
  // Also every 3 s while the detail is open: a change is stored just after it is announced.
  try {
    lastAudit = { id, entries: await api(`/api/alerts/${id}/audit`) };
    if (S.selected === id && !$("detail").hidden) fillAudit(lastAudit.entries);
  } catch (e) { const ol = $("timeline"); if (ol) ol.replaceChildren(el("li", { class: "error" }, e.message)); }
}
function closeDetail() { $("detail").hidden = true; document.body.classList.remove("detail-open"); }

// ---- communities (a schematic, not a map) ---------------------------------------------------
async function loadCommunities() {
  try { S.communities = await api("/api/status/communities"); S.communitiesLoaded = true; renderSchematic(); } catch (e) { if (e.status === 401) setRefused(401); }
}
function renderSchematic() {
  const open = [...S.alerts.values()].filter((a) => a.state !== "resolved");
  const frag = document.createDocumentFragment();
  for (const c of S.communities) {
    const mine = open.filter((a) => a.community_id === c.id);
    const crit = mine.some((a) => a.severity === "critical");
    const blds = el("div", { class: "blds" });
    for (const b of c.buildings) {
      const ba = mine.filter((a) => (a.building || "") === b.id);
      const cls = ba.some((a) => a.severity === "critical") ? "crit" : ba.length || b.low_battery ? "warn" : b.offline ? "offline" : "";
      blds.append(el("div", { class: "bld " + cls, title: `${b.online}/${b.total} ${t("online")}` }, el("b", {}, b.id || "·"), `${b.online}/${b.total}`));
    }
    const gws = el("div", {}, ...c.gateways.map((g) => el("span", { class: "gw " + (g.online === false ? "off" : g.online ? "on" : "") },
      `${g.online === false ? "✖" : "●"} ${g.id} · ${t("last_contact")} ${g.last_contact ? fmtDur(Date.now() - Date.parse(g.last_contact)) : t("never")}${g.outbox_depth != null ? " · " + t("outbox") + " " + g.outbox_depth : ""} `)));
    const d = c.devices;
    frag.append(el("div", { class: "com" + (crit ? " alerting" : ""), "data-id": c.id, tabindex: "0", onclick: () => loadDevices(c), onkeydown: (e) => { if (e.key === "Enter") loadDevices(c); } },
      el("div", { class: "name" }, c.name, mine.length ? el("span", { class: "chip" }, `${mine.length} ${t("open_alerts")}`) : null),
      el("div", { class: "meta" }, `${c.district_name || c.district} ${c.street || ""} · ${c.property_name || c.property}`),
      blds,
      el("div", { class: "counts" }, `${t("devices")} ${d.total} · ${t("online")} ${d.online} · `,
        el("span", { class: d.offline ? "bad" : "" }, `${t("offline")} ${d.offline}`), ` · ${t("unknown")} ${d.unknown} · `,
        el("span", { class: d.low_battery ? "bad" : "" }, `${t("low_battery")} ${d.low_battery}`)),
      gws));
  }
  if (S.communitiesLoaded && !S.communities.length) frag.append(el("p", { class: "none" }, t("no_communities")));
  $("schematic").replaceChildren(frag);
}
async function loadDevices(c) {
  const devs = await api("/api/status/devices?community_id=" + encodeURIComponent(c.id));
  $("community-detail").replaceChildren(el("h2", {}, c.name), el("table", {},
    el("thead", {}, el("tr", {}, ...["device", "tab_communities", "location", "col_state", "low_battery", "last_contact"].map((k) => el("th", {}, k === "tab_communities" ? "" : t(k))))),
    el("tbody", {}, ...devs.map((d) => el("tr", {},
      el("td", {}, d.id), el("td", {}, pair(KIND, d.kind)), el("td", {}, `${d.building ? d.building + t("building") : ""} ${d.location || ""}`),
      el("td", { class: d.status === "offline" ? "state-raised" : "" }, t(d.status)),
      el("td", { class: d.low_battery ? "state-raised" : "" }, d.battery_pct != null ? `${Math.round(d.battery_pct)}%` : "—"),
      el("td", {}, d.last_seen ? fmtTime(d.last_seen) : t("never")))))));
}

// ---- elevators ------------------------------------------------------------------------------
async function loadElevators() {
  try { S.elevators = await api("/api/status/elevators"); renderElevators(); } catch (e) { if (e.status === 401) setRefused(401); }
}
function renderElevators() {
  const open = [...S.alerts.values()].filter((a) => a.state !== "resolved" && a.device_kind === "elevator");
  const frag = document.createDocumentFragment();
  for (const e of S.elevators) {
    const mine = open.filter((a) => a.device_id === e.device_id);
    const alerts = mine.length ? mine : e.open_alerts;
    const dir = e.direction === "up" ? "▲" : e.direction === "down" ? "▼" : "■";
    const stale = !e.ts || Date.now() - Date.parse(e.ts) > 120000;
    frag.append(el("div", { class: "elev" + (alerts.some((a) => a.severity === "critical") ? " alerting" : ""), "data-id": e.device_id },
      el("div", { class: "title" }, `${e.community_name} · ${e.location || (e.building || "") + t("building")} · ${e.device_id}`),
      el("div", { class: "floor", "data-floor": e.floor ?? "" }, e.floor ?? "—", el("span", { class: "dir" }, `${dir} ${t(e.direction || "none")}`)),
      el("div", { class: "facts" }, `${t("door")} ${e.door ? t(e.door) : "—"} · ${t("passenger")} ${e.passenger == null ? "—" : t(e.passenger ? "yes" : "no")}`),
      el("div", { class: "facts" }, `${e.moving ? t("running") : t("stopped")} · ${e.in_door_zone === false ? t("out_zone") : t("in_zone")} · ${t("mode")} ${pair(MODE, e.service_mode || "unknown")}`),
      el("div", { class: "facts" + (stale ? " stale" : "") }, stale ? `${t("last_contact")} ${e.ts ? fmtTime(e.ts) : t("never")}` : fmtTime(e.ts)),
      el("div", { class: "facts", style: "grid-column: 1 / -1" }, ...alerts.map((a) => el("span", { class: "chip acked", style: "border-color: var(--crit); background: #3a0000; color: #fff" }, a.title ? titleOf(a) : a.type)))));
  }
  if (!S.elevators.length) frag.append(el("p", { class: "none" }, t("no_elevators")));
  $("elevators").replaceChildren(frag);
}

// ---- charts ---------------------------------------------------------------------------------
const RANGES = { "1h": [3600, 60], "6h": [6 * 3600, 300], "24h": [86400, 3600], "7d": [7 * 86400, 3600], "30d": [30 * 86400, 86400] };
async function loadChartDevices() {
  try {
    const devs = await api("/api/status/devices");
    S.devices = devs.filter((d) => KIND_METRICS[d.kind]);
  } catch (e) { if (e.status === 401) setRefused(401); return; }
  const sel = $("chart-device"), keep = sel.value;
  sel.replaceChildren(...S.devices.map((d) => el("option", { value: d.id }, `${pair(KIND, d.kind)} · ${d.id}`)));
  const [, dev, metric, range] = location.hash.split("/");
  if (dev && S.devices.some((d) => d.id === dev)) sel.value = dev; else if (keep) sel.value = keep;
  fillMetrics(metric);
  if (range && RANGES[range]) $("chart-range").value = range;
  drawSelected();
}
function fillMetrics(want) {
  const d = S.devices.find((x) => x.id === $("chart-device").value);
  const ms = d ? KIND_METRICS[d.kind] : [];
  $("chart-metric").replaceChildren(...ms.map((m) => el("option", { value: m }, pair(METRIC, m))));
  if (want && ms.includes(want)) $("chart-metric").value = want;
}
async function drawSelected() {
  const id = $("chart-device").value, metric = $("chart-metric").value, range = $("chart-range").value;
  if (!id || !metric) return;
  history.replaceState(null, "", `#charts/${id}/${metric}/${range}`);
  const [span, bucket] = RANGES[range];
  const end = new Date(Math.ceil(Date.now() / 60000) * 60000), start = new Date(end - span * 1000);
  let r;
  try {
    r = await api(`/api/telemetry/devices/${encodeURIComponent(id)}/metrics/${encodeURIComponent(metric)}?start=${start.toISOString()}&end=${end.toISOString()}&bucket_s=${bucket}`);
  } catch (e) { $("chart").textContent = e.message; return; }
  const pts = r.buckets.filter((b) => b.avg != null).map((b) => ({ t: new Date(b.start), avg: b.avg, min: b.min, max: b.max }));
  const d = S.devices.find((x) => x.id === id);
  const limitKey = METRIC[metric] && METRIC[metric][2];
  const limit = d && limitKey && d.params[limitKey] != null ? Number(d.params[limitKey]) : null;
  $("chart-source").textContent = `${t("chart_source")}: ${t(r.source)} · ${fmtDur(bucket * 1000)}`;
  $("chart").dataset.source = r.source;
  drawChart($("chart"), pts, { start, end, limit, limitLabel: t("limit"), fmtTime: span > 86400 ? fmtShort : (x) => `${pad2(x.getHours())}:${pad2(x.getMinutes())}` });
  if (!pts.length) { $("chart-stats").textContent = t("no_points"); return; }
  const avg = pts.reduce((s, p) => s + p.avg, 0) / pts.length;
  $("chart-stats").textContent = `${pair(METRIC, metric)} · ${t("latest")} ${+pts[pts.length - 1].avg.toFixed(3)} · ${t("min")} ${+Math.min(...pts.map((p) => p.min)).toFixed(3)} · ${t("max")} ${+Math.max(...pts.map((p) => p.max)).toFixed(3)} · ${t("avg")} ${+avg.toFixed(3)}`;
}

// ---- pages, keys, language ------------------------------------------------------------------
let pagePoll = null;
function showTab(tab) {
  S.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.setAttribute("aria-selected", b.dataset.tab === tab ? "true" : "false");
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "page-" + tab;
  if (!location.hash.startsWith("#" + tab)) history.replaceState(null, "", "#" + tab);
  clearInterval(pagePoll);
  if (!S.started) return;
  if (tab === "communities") { loadCommunities(); pagePoll = setInterval(loadCommunities, 15000); }
  if (tab === "elevators") { loadElevators(); pagePoll = setInterval(loadElevators, 1000); }
  if (tab === "charts") { loadChartDevices(); pagePoll = setInterval(drawSelected, 60000); }
}
function applyLang() {
  document.documentElement.lang = zh() ? "zh-CN" : "en";
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  $("lang").textContent = t("lang");
  $("keys").textContent = t("keys");
  $("sound-locked").textContent = t("sound_locked");
  renderWho();
  renderMute();
  setLive(S.live);
  renderAlerts();
  if (S.tab === "communities") renderSchematic();
  if (S.tab === "elevators") renderElevators();
  if (S.selected && !$("detail").hidden) openDetail(S.selected, true);
}
function renderWho() {
  const m = S.me;
  const dept = m && ["fire", "market_supervision", "public_security", "construction"].includes(m.audience);
  $("app-title").textContent = t(dept ? "dept_app" : "app");
  document.title = $("app-title").textContent;
  $("who").textContent = m ? `${m.scope_name || m.scope || ""} ${pair(AUDIENCE, m.audience)} · ${m.name}` : "";
}
function onKey(e) {
  if (!$("login").hidden) return;
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName);
  if (e.key === "Escape") { closeDetail(); if (typing) e.target.blur(); return; }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  unlockAudio();
  const k = e.key.toLowerCase();
  const tab = { 1: "alerts", 2: "communities", 3: "elevators", 4: "charts" }[k];
  if (tab) return showTab(tab);
  if (k === "m") return setMuted(!anjuAlarm.muted);
  if (k === "l") { S.lang = zh() ? "en" : "zh"; store.setItem("anju.lang", S.lang); return applyLang(); }
  if (S.tab !== "alerts") return;
  if (e.key === "ArrowDown" || k === "j") { e.preventDefault(); moveSelection(1); }
  else if (e.key === "ArrowUp" || k === "k") { e.preventDefault(); moveSelection(-1); }
  else if (e.key === "Enter" && S.selected) openDetail(S.selected, true);
  else if (k === "a" && S.selected) {
    if ($("detail").hidden) quickAck(S.selected); else { const b = $("ack-btn"); if (b) b.click(); }
  } else if (k === "r" && S.selected) {
    if ($("detail").hidden) openDetail(S.selected, true).then(() => $("ack-note") && $("ack-note").focus());
    else { const b = $("resolve-btn"); if (b) b.click(); }
  }
}

// ---- log-in and start -----------------------------------------------------------------------
function showLogin(error) {
  $("login").hidden = false;
  $("login-error").textContent = error || "";
  $("token").value = "";
  $("token").focus();
}
async function start() {
  try {
    S.me = await api("/api/status/me");
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      // No token yet: just ask. A token that was given and refused: say so, loudly.
      if (S.token) { store.removeItem("anju.token"); return setRefused(e.status); }
      return showLogin("");
    }
    $("banner-text").textContent = t("login_net") + e.message;
    setTimeout(start, 3000);
    return;
  }
  S.refused = false;
  window.anjuScreen.refused = false;
  document.body.classList.remove("refused");
  $("login").hidden = true;
  S.started = true;
  S.notLiveSince = Date.now();
  renderWho();
  setLive(false);
  connect();
  showTab(S.tab);
}
$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  S.token = $("token").value.trim();
  store.setItem("anju.token", S.token);
  unlockAudio();
  start();
});
$("logout").onclick = () => { store.removeItem("anju.token"); location.hash = ""; location.reload(); };
$("mute").onclick = () => { unlockAudio(); setMuted(!anjuAlarm.muted); };
$("lang").onclick = () => { S.lang = zh() ? "en" : "zh"; store.setItem("anju.lang", S.lang); applyLang(); };
$("detail-close").onclick = closeDetail;
$("sound-locked").onclick = unlockAudio;
$("chart-device").onchange = () => { fillMetrics(); drawSelected(); };
$("chart-metric").onchange = drawSelected;
$("chart-range").onchange = drawSelected;
for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => showTab(b.dataset.tab);
document.addEventListener("keydown", onKey);
document.addEventListener("pointerdown", unlockAudio);

// For tests and the benchmark (anju bench screen): read-only state and the render steps.
window.anjuScreen = { live: false, refused: false, rendered: 0, liveAt: 0, state: S, render: renderAlerts, tick: tickRows, upsert: (a) => upsert(a, true) };
const initial = location.hash.slice(1).split("/")[0];
if (["alerts", "communities", "elevators", "charts"].includes(initial)) S.tab = initial;
applyLang();
showTab(S.tab);
setInterval(() => {
  $("clock").textContent = fmtTime(new Date().toISOString());
  $("banner-since").textContent = !S.live && S.started ? `${t("banner_since")} ${fmtDur(Date.now() - S.notLiveSince)}` : "";
  tickRows();
  if (S.selected && !$("detail").hidden && Math.floor(Date.now() / 1000) % 3 === 0) refreshAudit(S.selected);
}, 1000);
setInterval(soundTick, 1500);
setInterval(watchdog, 10000);
start();
