// Supervision pages (rankings, a company's file, a community's scorecard, the lists, the
// public disclosure). One script; what it draws follows <body data-page>. Offline: no CDN.
"use strict";

const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PAGE = document.body.dataset.page;

const FIG = {
  alerts: "告警数", critical: "紧急", major: "重要", minor: "一般", acked: "已确认",
  ack_median_s: "确认用时中位数(秒)", ack_p90_s: "确认用时P90(秒)",
  resolve_median_s: "处置用时中位数(秒)", resolve_p90_s: "处置用时P90(秒)",
  escalated: "升级", overdue: "超时未确认", device_online_ratio: "设备在线率",
  gateway_uptime: "网关在线率", elevators: "电梯数", trapped: "困人", elevator_faults: "电梯故障",
  faults_per_elevator: "台均故障", maint_ack_median_s: "维保确认中位数(秒)",
  maint_ack_p90_s: "维保确认P90(秒)", fire_alarms: "火警", fire_confirmed: "确认火警",
  fire_false_alarms: "误报", water_pressure_hours: "水压异常(小时)",
  electrical_hours: "电气火灾超限(小时)", security_alerts: "安防告警",
};
const LIST = { red: "红名单", black: "黑名单" };

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;" })[c]);
}
function fmt(k, v) {
  if (v === null || v === undefined) return "—";
  if (k.endsWith("_ratio") || k === "gateway_uptime") return (v * 100).toFixed(2) + "%";
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(1);
  return String(v);
}
function localTime(iso) {
  return new Date(iso).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false });
}
function gradeCell(g) { return `<span class="grade grade-${esc(g)}">${esc(g)}</span>`; }
function listCell(l) { return l ? `<span class="list-${esc(l)}">${LIST[l] || esc(l)}</span>` : ""; }
function showError(text) { const e = $("error"); e.textContent = text; e.style.display = "block"; }

function thisMonth() {
  const d = new Date(Date.now() + 8 * 3600e3); // Asia/Shanghai
  return d.toISOString().slice(0, 7);
}
const month = params.get("month") || thisMonth();

async function api(path, extra = {}) {
  const own = PAGE === "public" && !params.get("month"); // the latest published month
  const q = new URLSearchParams(own ? extra : { month, ...extra });
  const headers = {};
  const token = store.getItem("anju.token");
  if (token && PAGE !== "public") headers.Authorization = "Bearer " + token;
  const r = await fetch(`${path}?${q}`, { headers });
  if (r.status === 401) { askToken(); throw new Error("需要令牌 a token is required"); }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${r.status}: ${detail}`);
  }
  return r;
}
async function json(path, extra) { return (await api(path, extra)).json(); }

async function download(path, format, extra = {}) {
  try {
    const r = await api(path, { ...extra, format });
    const blob = await r.blob();
    const name = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name ? name[1] : `export.${format}`;
    document.body.appendChild(a); a.click(); a.remove();
  } catch (e) { showError(e.message); }
}
function exportButtons(path, extra = {}) {
  const span = document.createElement("span");
  for (const [fmtName, label] of [["csv", "导出 CSV"], ["xlsx", "导出 Excel"]]) {
    const b = document.createElement("button");
    b.textContent = label;
    b.className = `export-${fmtName}`;
    b.onclick = () => download(path, fmtName, extra);
    span.appendChild(b);
  }
  return span;
}

// What every page shares, written here once (each page's HTML holds its own <main>): the
// header with the links and the month, the error line, the token box.
const NAV = [["index.html", "rankings", "排名", "Rankings"], ["lists.html", "lists", "红黑名单", "Lists"],
  ["public.html", "public", "社会公示", "Public"]];
function chrome() {
  const links = NAV.map(([href, page, zh, en]) =>
    `<a href="${href}" class="${page === PAGE ? "on" : ""}">${zh} <span class="en">${en}</span></a>`);
  document.body.insertAdjacentHTML("afterbegin", `<header>
  <h1>物业服务监管 <span class="en">Property supervision</span></h1>
  ${links.join("\n  ")}
  <label>月份 <input type="month" id="month"></label>
</header>
<div id="error" role="alert"></div>
<div id="login" class="note" style="display:none">
  请输入令牌 <span class="en">API token</span>: <input id="token" type="password" size="30">
  <button id="token-save">确定</button> <button id="token-clear">退出</button>
</div>`);
}

function askToken() {
  const box = $("login");
  if (!box) return;
  box.style.display = "block";
  $("token").focus();
}
function setupLogin() {
  const box = $("login");
  if (!box) return;
  $("token-save").onclick = () => {
    store.setItem("anju.token", $("token").value.trim());
    location.reload();
  };
  $("token-clear").onclick = () => { store.removeItem("anju.token"); location.reload(); };
}

function monthPicker() {
  const m = $("month");
  if (!m) return;
  m.value = month;
  m.onchange = () => { params.set("month", m.value); location.search = params.toString(); };
}

function table(cols, rows, cell) {
  const head = cols.map(([, label]) => `<th>${label}</th>`).join("");
  const body = rows.map((r) => "<tr>" + cols.map(([k]) => cell(k, r)).join("") + "</tr>").join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}
function figCell(k, r) { return `<td class="num">${esc(fmt(k, r[k]))}</td>`; }

// ---- pages ---------------------------------------------------------------------------------

const MAIN_FIGS = ["alerts", "ack_median_s", "ack_p90_s", "escalated", "overdue",
  "device_online_ratio", "trapped", "fire_false_alarms"];

async function rankings() {
  const credit = await json("/api/supervision/credit");
  $("ruleset").textContent = `${credit.ruleset_version} · ${credit.ruleset_status}`;
  const cols = [["rank", "排名"], ["org_name", "物业服务企业"], ["score", "得分"], ["grade", "等级"],
    ["list", "名单"], ...MAIN_FIGS.map((k) => [k, FIG[k]])];
  $("ranking").innerHTML = table(cols, credit.rows.map((r, i) => ({ ...r, rank: i + 1 })), (k, r) => {
    if (k === "org_name") {
      return `<td><a class="company" href="company.html?org=${encodeURIComponent(r.org_id)}&month=${month}">${esc(r.org_name)}</a></td>`;
    }
    if (k === "grade") return `<td>${gradeCell(r.grade)}</td>`;
    if (k === "list") return `<td>${listCell(r.list)}</td>`;
    if (k === "rank" || k === "score") return `<td class="num">${esc(r[k])}</td>`;
    return figCell(k, r.figures);
  });
  $("ranking-export").appendChild(exportButtons("/api/supervision/credit"));
  const cards = await json("/api/supervision/scorecards");
  const titles = Object.keys(cards.rows[0] || {}).filter((k) =>
    !["community_id", "name", "month", "failed"].includes(k));
  const ccols = [["name", "小区"], ...titles.map((t) => [t, t]), ["failed", "未达标项"]];
  $("communities").innerHTML = table(ccols, cards.rows, (k, r) => {
    if (k === "name") {
      return `<td><a class="community" href="community.html?id=${encodeURIComponent(r.community_id)}&month=${month}">${esc(r.name)}</a></td>`;
    }
    if (typeof r[k] === "boolean") return `<td class="${r[k] ? "pass" : "fail"}">${r[k] ? "达标" : "未达标"}</td>`;
    return `<td>${esc(r[k])}</td>`;
  });
  $("communities-export").appendChild(exportButtons("/api/supervision/scorecards"));
  $("figures-export").appendChild(exportButtons("/api/supervision/figures"));
  $("bytype-export").appendChild(exportButtons("/api/supervision/alerts-by-type"));
  $("publish").onclick = async () => {
    if (!confirm(`发布 ${month} 的信用评价结果？ Publish ${month}?`)) return;
    try {
      const q = new URLSearchParams({ month });
      const headers = { Authorization: "Bearer " + (store.getItem("anju.token") || "") };
      const r = await fetch(`/api/supervision/credit/publish?${q}`, { method: "POST", headers });
      if (!r.ok) throw new Error(`${r.status}: ${(await r.json()).detail}`);
      $("published").textContent = `已发布 published: ${(await r.json()).companies}`;
    } catch (e) { showError(e.message); }
  };
}

async function company() {
  const org = params.get("org");
  const r = await json(`/api/supervision/credit/${encodeURIComponent(org)}`);
  $("name").textContent = r.org_name;
  $("score").innerHTML = `<span class="big">${esc(r.score)}</span> 分 ${gradeCell(r.grade)} ${listCell(r.list)}`;
  $("ruleset").textContent = `规则 ruleset ${r.ruleset_version} (${r.ruleset_sha256.slice(0, 12)})`;
  $("list-reason").textContent = r.list_reason.join("; ");
  $("published").textContent = r.published
    ? `已于 ${localTime(r.published.published_at)} 发布：${r.published.score} 分 ${r.published.grade}`
    : "本月尚未发布（以下为当前计算结果） not yet published";
  const rows = r.lines.map((ln) => ({ ...ln }));
  $("lines").innerHTML = table(
    [["reason", "扣分/加分项"], ["rule", "规则"], ["value", "数值"], ["points", "分值"], ["evidence", "依据（告警）"]],
    rows, (k, ln) => {
      if (k === "points") {
        const cls = ln.points < 0 ? "fail" : ln.points > 0 ? "pass" : "";
        return `<td class="num ${cls}">${ln.points > 0 ? "+" : ""}${esc(ln.points)}</td>`;
      }
      if (k === "value") return figCell("value", { value: ln.value });
      if (k === "evidence") {
        const ev = (ln.evidence || []).map((e) =>
          `${esc(e.raised)} ${esc(e.community_name)} ${esc(e.type)}` +
          (e.deadline_s ? ` 时限 ${esc(e.deadline_s)}s` : "") +
          (e.ack_s !== null ? ` 确认 ${esc(e.ack_s)}s` : " 未确认") +
          (e.resolve_s !== null ? ` 处置 ${esc(e.resolve_s)}s` : "") +
          ` <span class="en">${esc(e.alert_id)}</span>`).join("<br>");
        return `<td class="evidence">${ev}</td>`;
      }
      return `<td>${esc(ln[k])}</td>`;
    });
  $("lines-export").appendChild(exportButtons(`/api/supervision/credit/${encodeURIComponent(org)}`));
  $("figs").innerHTML = table([["k", "指标"], ["v", "数值"]],
    Object.entries(FIG).map(([k, label]) => ({ k, label, v: r.figures[k] })),
    (k, row) => k === "k" ? `<td>${row.label}</td>` : figCell(row.k, { [row.k]: row.v }));
  const days = await json("/api/supervision/figures", { period: "day", key: org });
  const dcols = [["period", "日期"], ...MAIN_FIGS.map((k) => [k, FIG[k]])];
  $("days").innerHTML = table(dcols, days.rows, (k, row) =>
    k === "period" ? `<td>${esc(row.period)}</td>` : figCell(k, row));
  $("days-export").appendChild(exportButtons("/api/supervision/figures", { period: "day", key: org }));
}

async function community() {
  const id = params.get("id");
  const card = await json(`/api/supervision/scorecards/${encodeURIComponent(id)}`);
  $("name").textContent = card.name;
  $("ruleset").textContent = `规则 ruleset ${card.ruleset_version || ""}`;
  let html = "";
  for (const t of card.titles) {
    html += `<h2>${esc(t.name)} <span class="${t.passed ? "pass" : "fail"}">${t.passed ? "达标" : "未达标"}</span></h2>`;
    html += table([["area", "类别"], ["label", "要求"], ["value", "本月"], ["passed", "结果"],
      ["trend", "趋势（近几月）"], ["evidence", "依据"]], t.lines, (k, ln) => {
      if (k === "value") return figCell(ln.figure, { [ln.figure]: ln.value });
      if (k === "passed") return `<td class="${ln.passed ? "pass" : "fail"}">${ln.passed ? "达标" : "未达标"}</td>`;
      if (k === "trend") {
        return `<td class="num">${ln.trend.map((p) => `${esc(p.month.slice(2, 7))}: ${esc(fmt(ln.figure, p.value))}`).join(" · ")}</td>`;
      }
      if (k === "evidence") {
        return `<td class="evidence">${(ln.evidence || []).map((e) => `${esc(e.raised)} ${esc(e.type)}`).join("<br>")}</td>`;
      }
      if (k === "area") return `<td>${{ fire: "消防", elevator: "电梯", security: "安防", operations: "运行" }[ln.area] || esc(ln.area)}</td>`;
      return `<td>${esc(ln[k])}</td>`;
    });
  }
  $("titles").innerHTML = html || "<p>本月无数据 no figures for this month</p>";
  $("card-export").appendChild(exportButtons(`/api/supervision/scorecards/${encodeURIComponent(id)}`));
}

async function lists() {
  const body = await json("/api/supervision/lists");
  $("source").textContent = body.source === "published" ? "已发布结果 published" : "当前计算结果（本月未发布） current, not published";
  for (const which of ["red", "black"]) {
    const rows = body.rows.filter((r) => r.list === which);
    $(which).innerHTML = rows.length ? table(
      [["org_name", "物业服务企业"], ["score", "得分"], ["grade", "等级"], ["reasons", "列入原因"], ["lines", "扣分明细"]],
      rows, (k, r) => {
        if (k === "grade") return `<td>${gradeCell(r.grade)}</td>`;
        if (k === "org_name") return `<td><a href="company.html?org=${encodeURIComponent(r.org_id)}&month=${month}">${esc(r.org_name)}</a></td>`;
        if (k === "reasons") return `<td>${r.reasons.map(esc).join("<br>")}</td>`;
        if (k === "lines") return `<td>${r.lines.map((ln) => `${esc(ln.reason)} (${ln.points > 0 ? "+" : ""}${esc(ln.points)})`).join("<br>")}</td>`;
        return `<td class="num">${esc(r[k])}</td>`;
      }) : "<p>无 none</p>";
  }
  $("lists-export").appendChild(exportButtons("/api/supervision/lists"));
}

async function publicPage() {
  const body = await json("/api/supervision/public");
  $("month-shown").textContent = body.month.slice(0, 7);
  if ($("month")) $("month").value = body.month.slice(0, 7); // the month shown, not today's
  if (!body.published) {
    $("companies").innerHTML = "<p>该月考核评价结果尚未发布。 Not published yet.</p>";
    return;
  }
  $("ruleset").textContent = `评价规则版本 ${body.ruleset_version}，发布于 ${localTime(body.published_at)}`;
  const cols = [["org_name", "物业服务企业"], ["grade", "信用等级"], ["score", "得分"], ["list", "名单"],
    ["alerts", FIG.alerts], ["ack_median_s", FIG.ack_median_s], ["resolve_median_s", FIG.resolve_median_s],
    ["escalated", FIG.escalated], ["overdue", FIG.overdue], ["device_online_ratio", FIG.device_online_ratio],
    ["trapped", FIG.trapped], ["fire_false_alarms", FIG.fire_false_alarms]];
  $("companies").innerHTML = table(cols, body.rows, (k, r) => {
    if (k === "grade") return `<td>${gradeCell(r.grade)}</td>`;
    if (k === "list") return `<td>${listCell(r.list)}</td>`;
    if (k === "org_name") return `<td>${esc(r.org_name)}</td>`;
    return figCell(k, r);
  });
  $("public-export").appendChild(exportButtons("/api/supervision/public"));
}

const PAGES = { rankings, company, community, lists, public: publicPage };
chrome();
setupLogin();
monthPicker();
PAGES[PAGE]().then(() => { document.body.dataset.ready = "1"; }).catch((e) => {
  showError(e.message);
  document.body.dataset.ready = "error";
});
