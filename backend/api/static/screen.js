// The control-room screen: the open alerts from the API, then live changes over SSE; a tone
// for critical alerts (WebAudio; the browser allows sound after the first click), and an
// acknowledge button for the token's audience.
"use strict";
const alerts = new Map();
const $ = (id) => document.getElementById(id);
let audio = null;

function beep() {
  if (!audio) return;
  const o = audio.createOscillator(), g = audio.createGain();
  o.frequency.value = 880; o.connect(g); g.connect(audio.destination);
  g.gain.setValueAtTime(0.3, audio.currentTime);
  o.start(); o.stop(audio.currentTime + 0.6);
}

function api(path, opts = {}) {
  const headers = { "Content-Type": "application/json" };
  const t = $("token").value;
  if (t) headers.Authorization = "Bearer " + t;
  return fetch(path, { ...opts, headers }).then((r) => {
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    return r.json();
  });
}

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function render() {
  const rows = $("rows");
  rows.replaceChildren();
  const list = [...alerts.values()].sort((a, b) => (a.state === "resolved") - (b.state === "resolved") || b.updated_at.localeCompare(a.updated_at));
  for (const a of list) {
    const tr = document.createElement("tr");
    tr.className = a.severity + " " + a.state;
    tr.append(cell(a.severity), cell(a.title + " · " + a.type),
      cell(a.community_name + " " + (a.location || a.device_id)),
      cell(a.state + (a.acks.length ? " (" + a.acks.map((k) => k.audience).join(", ") + ")" : "")),
      cell(a.occurred_at.slice(11, 19)));
    const td = document.createElement("td");
    if (a.state !== "resolved") {
      const b = document.createElement("button");
      b.textContent = "确认 Acknowledge";
      b.onclick = () => api("/api/alerts/" + a.id + "/ack", { method: "POST", body: JSON.stringify({ by: $("by").value || "control room" }) })
        .then(upsert).catch((e) => alert(e));
      td.append(b);
    }
    tr.append(td);
    rows.append(tr);
  }
}

function upsert(a) {
  const before = alerts.get(a.id);
  alerts.set(a.id, a);
  if (a.severity === "critical" && (!before || a.state === "escalated") && a.state !== "resolved") beep();
  render();
}

$("connect").onclick = () => {
  audio = audio || new AudioContext();
  api("/api/alerts?open_only=true").then((list) => { list.forEach((a) => alerts.set(a.id, a)); render(); });
  const t = $("token").value;
  const es = new EventSource("/api/alerts/stream" + (t ? "?access_token=" + encodeURIComponent(t) : ""));
  es.addEventListener("alert", (e) => upsert(JSON.parse(e.data)));
  es.onopen = () => { $("status").textContent = "实时 live"; };
  es.onerror = () => { $("status").textContent = "重连中 reconnecting…"; };
};
