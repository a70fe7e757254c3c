// incidentd board: plain JavaScript, no framework, same-origin only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { incidents: new Map(), selected: null, known: new Set(), severity: new Map(), busy: false, again: false };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function ago(ts) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function human(secs) {
  if (secs == null) return "–";
  if (secs < 90) return `${Math.round(secs)}s`;
  if (secs < 5400) return `${Math.round(secs / 60)}m`;
  return `${(secs / 3600).toFixed(1)}h`;
}

const active = (s) => s === "open" || s === "acknowledged" || s === "mitigated";

function matches(i) {
  const st = $("f-status").value, sev = $("f-severity").value, svc = $("f-service").value.trim();
  if (st === "active" ? !active(i.status) : st && i.status !== st) return false;
  if (sev && i.severity !== sev) return false;
  if (svc && i.service !== svc) return false;
  return true;
}

function render() {
  const rows = [...state.incidents.values()].filter(matches)
    .sort((a, b) => a.severity.localeCompare(b.severity) || b.id - a.id);
  const body = $("incidents");
  body.replaceChildren(...rows.map((i) => {
    const tr = el("tr", { "data-id": i.id, class: i.id === state.selected ? "selected" : "" },
      el("td", {}, i.id),
      el("td", { class: `sev-${i.severity}` }, i.severity),
      el("td", { class: "status" }, i.status),
      el("td", { title: i.created_at }, ago(i.created_at)),
      el("td", {}, i.service || "–"),
      el("td", { class: "title" }, i.title));
    tr.addEventListener("click", () => select(i.id));
    return tr;
  }));
  $("empty").hidden = rows.length > 0;
  const all = [...state.incidents.values()].filter((i) => active(i.status));
  $("count-sev1").textContent = all.filter((i) => i.severity === "sev1").length;
  $("count-sev2").textContent = all.filter((i) => i.severity === "sev2").length;
  $("count-open").textContent = all.length;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return (r.headers.get("content-type") || "").includes("json") ? r.json() : r.text();
}

// Keeps the newer of two copies of an incident (by the length of its timeline).
function keep(i) {
  const had = state.incidents.get(i.id);
  if (!had || (i.timeline_len || 0) >= (had.timeline_len || 0)) state.incidents.set(i.id, i);
}

async function pages(query, max) {
  let cursor = null;
  for (let page = 0; page < max; page++) {
    const q = new URLSearchParams(query);
    if (cursor) q.set("cursor", cursor);
    const p = await api(`/v1/incidents?${q}`);
    for (const i of p.incidents) { keep(i); state.known.add(i.id); state.severity.set(i.id, i.severity); }
    if (!p.next_cursor) return;
    cursor = p.next_cursor;
  }
}

// Every active incident, and the newest others; merged, so changes the stream already
// brought are not undone by an older copy.
async function load() {
  await pages({ status: "active", limit: "500" }, 1000);
  await pages({ limit: "200" }, 1);
  render();
}

// One refresh of the open incident at a time; changes meanwhile make one more.
async function refresh(id) {
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try { await select(id); } finally {
    state.busy = false;
    if (state.again && state.selected === id) { state.again = false; refresh(id); }
  }
}

async function select(id) {
  state.selected = id;
  render();
  $("detail").hidden = false;
  $("d-error").textContent = "";
  const [inc, tl, runs, pm] = await Promise.all([
    api(`/v1/incidents/${id}`),
    api(`/v1/incidents/${id}/timeline`),
    api(`/v1/actions?incident=${id}`),
    api(`/v1/incidents/${id}/postmortem`).catch((e) => `(${e.message})`),
  ]);
  if (state.selected !== id) return;
  keep(inc);
  $("d-title").textContent = `#${inc.id} ${inc.title}`;
  $("d-meta").textContent = `${inc.severity} · ${inc.status} · ${inc.service || "no service"} · ` +
    `${inc.detections} detection(s) · created ${ago(inc.created_at)}` +
    (inc.root_cause ? ` · root cause ${inc.root_cause}` : "");
  for (const b of ["ack", "mitigate", "resolve"]) $(b).disabled = !active(inc.status);
  $("d-timeline").replaceChildren(...tl.timeline.map((e) => el("li", {},
    el("span", { class: "muted" }, `${e.ts} `), el("b", {}, e.type), ` by ${e.actor}`,
    e.data && e.data.to !== undefined && e.data.from !== undefined ? ` (${e.data.from} → ${e.data.to})` : "",
    e.note ? `: ${e.note}` : (e.data && e.data.summary ? `: ${e.data.summary}` : ""))));
  $("d-evidence").textContent = (inc.evidence || []).map((ev) => JSON.stringify(ev)).join("\n") || "none";
  const rows = runs.actions.map((r) => el("tr", {},
    el("td", {}, `run ${r.id}`), el("td", {}, r.action), el("td", { class: "run-state" }, r.state),
    el("td", {}, r.reason),
    el("td", {}, r.outcome ? (r.outcome.error || (r.outcome.stdout || "").slice(0, 200) || "ok") : "")));
  $("d-actions").tBodies[0].replaceChildren(...rows);
  if (!rows.length) $("d-actions").tBodies[0].append(el("tr", {}, el("td", { class: "muted" }, "none")));
  $("d-postmortem").textContent = pm;
  render();
}

async function change(action) {
  const id = state.selected;
  if (id == null) return;
  $("d-error").textContent = "";
  try {
    const token = $("token").value;
    const inc = await api(`/v1/incidents/${id}/${action}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: "{}",
    });
    state.incidents.set(inc.id, inc);
    await select(id);
  } catch (e) {
    $("d-error").textContent = e.message;
  }
}

const urgent = (s) => s === "sev1" || s === "sev2";

// A notification when an incident is new and urgent, or becomes urgent.
function maybeNotify(i) {
  const before = state.severity.get(i.id);
  state.severity.set(i.id, i.severity);
  if (!urgent(i.severity) || (before && urgent(before) && before <= i.severity)) return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  new Notification(`${i.severity}: ${i.title}`, { body: `incident #${i.id}`, tag: `incident-${i.id}` });
}

function connect() {
  const es = new EventSource("/v1/stream");
  const badge = $("live");
  es.onopen = () => {
    badge.textContent = "live"; badge.className = "badge on";
    load().catch((e) => { $("empty").hidden = false; $("empty").textContent = `cannot load: ${e.message}`; });
  };
  es.onerror = () => { badge.textContent = "offline"; badge.className = "badge off"; };
  const onChange = (ev) => {
    const d = JSON.parse(ev.data);
    if (!d.incident) return;
    state.known.add(d.incident.id);
    keep(d.incident);
    maybeNotify(d.incident);
    render();
    if (state.selected === d.incident.id) refresh(d.incident.id).catch(() => {});
  };
  for (const t of ["incident_created", "incident_updated", "detection", "action", "notification"]) {
    es.addEventListener(t, onChange);
  }
}

async function weeks() {
  const s = await api("/v1/stats?since=84d");
  const entries = Object.entries(s.by_week || {}).slice(-12);
  const max = Math.max(1, ...entries.map(([, w]) => w.incidents));
  const W = 24, H = 80, svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", String(entries.length * W + 10));
  svg.setAttribute("height", String(H + 16));
  entries.forEach(([week, w], n) => {
    const h = Math.round((w.incidents / max) * H);
    const r = document.createElementNS(svgNS, "rect");
    r.setAttribute("class", "bar"); r.setAttribute("x", String(n * W + 4));
    r.setAttribute("y", String(H - h)); r.setAttribute("width", String(W - 6)); r.setAttribute("height", String(h));
    const title = document.createElementNS(svgNS, "title");
    title.textContent = `week of ${week}: ${w.incidents}`;
    r.append(title);
    const t = document.createElementNS(svgNS, "text");
    t.setAttribute("x", String(n * W + 4)); t.setAttribute("y", String(H + 12));
    t.textContent = week.slice(5);
    svg.append(r, t);
  });
  $("chart").replaceChildren(svg);
  $("weeks").tBodies[0].replaceChildren(...entries.reverse().map(([week, w]) => el("tr", {},
    el("td", {}, week), el("td", {}, w.incidents), el("td", {}, human(w.times.mtta.mean)),
    el("td", {}, human(w.times.mttr.mean)))));
}

// Kept for this tab's session only.
$("token").value = sessionStorage.getItem("incidentd-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("incidentd-token", $("token").value));
for (const b of ["ack", "mitigate", "resolve"]) $(b).addEventListener("click", () => change($(b).dataset.action));
for (const f of ["f-status", "f-severity", "f-service"]) $(f).addEventListener("input", render);
$("notify-btn").addEventListener("click", () => {
  if ("Notification" in window) Notification.requestPermission();
});
// The stream's every (re)connection loads the list again, so a failed first load recovers.
connect();
weeks().catch(() => {});
setInterval(() => { render(); weeks().catch(() => {}); }, 30000);
