// incidentd board: plain JavaScript, no framework, same-origin only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { incidents: new Map(), selected: null, known: new Set(), severity: new Map(), busy: false, again: false, shownStage: undefined };

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

// The SLA most pressing for an active incident: what is left, or how long ago it broke.
function slaOf(i) {
  if (!active(i.status) || !i.sla) return { text: "–", cls: "" };
  let worst = null;
  for (const [kind, s] of Object.entries(i.sla)) {
    if (s.state === "met" || (kind === "ack" && i.status !== "open")) continue;
    const left = (Date.parse(s.due_at) - Date.now()) / 1000;
    if (!worst || left < worst.left) worst = { kind, left };
  }
  if (!worst) return { text: "met", cls: "sla-met" };
  if (worst.left <= 0) return { text: `${worst.kind} breached ${human(-worst.left)} ago`, cls: "sla-breached" };
  return { text: `${worst.kind} ${human(worst.left)} left`, cls: worst.left < 300 ? "sla-soon" : "" };
}

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
      el("td", { class: "stage" }, i.stage || "assess"),
      el("td", { class: `sla ${slaOf(i).cls}` }, slaOf(i).text),
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
  // The stream's copies carry no SLA: the one loaded stays while the severity does.
  if (!i.sla && had && had.sla && had.severity === i.severity) i.sla = had.sla;
  if (!had || (i.timeline_len || 0) >= (had.timeline_len || 0)) state.incidents.set(i.id, i);
  // An older copy with the SLA (a detail fetched while the stream moved on) still lends it
  // to the newer one the stream brought without: its due times do not change.
  else if (i.sla && !had.sla && had.severity === i.severity) had.sla = i.sla;
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
  // A live update of the incident shown refreshes it without undoing what the user is
  // doing: an error stays on screen and a stage picked but not yet moved stays picked.
  const other = state.selected !== id;
  state.selected = id;
  render();
  $("detail").hidden = false;
  if (other) {
    $("d-error").textContent = "";
    state.shownStage = undefined;
  }
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
  for (const b of ["ack", "mitigate", "resolve", "stage-move"]) $(b).disabled = !active(inc.status);
  if (state.shownStage !== inc.stage) $("d-stage").value = inc.stage || "assess";
  state.shownStage = inc.stage;
  $("d-sla").replaceChildren(...Object.entries(inc.sla || {}).map(([kind, s]) => {
    const left = s.state === "running" ? `: ${human(s.left_seconds)} left` : `: ${s.state}`;
    return el("span", { class: `sla-${s.state} sla-kind`, "data-kind": kind }, `${kind} within ${s.within}${left}  `);
  }));
  if (!inc.sla) $("d-sla").textContent = "no SLA";
  $("d-timeline").replaceChildren(...tl.timeline.map((e) => el("li", {},
    el("span", { class: "muted" }, `${e.ts} `), el("b", {}, e.type), ` by ${e.actor}`,
    e.data && e.data.to !== undefined && e.data.from !== undefined ? ` (${e.data.from} → ${e.data.to})` : "",
    e.note ? `: ${e.note}` : (e.data && e.data.summary
      ? `: ${e.data.detections > 1 ? `${e.data.detections} detections, the last: ` : ""}${e.data.summary}` : ""))));
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
    const inc = await api(`/v1/incidents/${id}/${action}`, {
      method: "POST",
      headers: bearer(),
      body: "{}",
    });
    state.incidents.set(inc.id, inc);
    await select(id);
  } catch (e) {
    $("d-error").textContent = e.message;
  }
}

function bearer() {
  return { "content-type": "application/json", authorization: `Bearer ${$("token").value}` };
}

async function moveStage() {
  const id = state.selected;
  if (id == null) return;
  $("d-error").textContent = "";
  try {
    const inc = await api(`/v1/incidents/${id}/stage`, {
      method: "POST",
      headers: bearer(),
      body: JSON.stringify({ stage: $("d-stage").value, note: $("d-stage-note").value }),
    });
    $("d-stage-note").value = "";
    keep(inc);
    await select(id);
  } catch (e) {
    $("d-error").textContent = e.message;
  }
}

// Action runs waiting for an admin: approve or deny with the admin token.
async function approvals() {
  const p = await api("/v1/actions?state=pending");
  const rows = p.actions.map((r) => {
    const yes = el("button", { type: "button", class: "approve", "data-run": r.id }, "approve");
    const no = el("button", { type: "button", class: "deny", "data-run": r.id }, "deny");
    yes.addEventListener("click", () => decide(r.id, "approve"));
    no.addEventListener("click", () => decide(r.id, "deny"));
    return el("tr", { "data-run": r.id }, el("td", {}, r.id), el("td", {}, r.action),
      el("td", {}, `#${r.incident_id}`), el("td", {}, r.reason || ""), el("td", {}, yes, " ", no));
  });
  $("pending").tBodies[0].replaceChildren(...rows);
  $("approvals").hidden = rows.length === 0;
}

async function decide(run, decision) {
  $("a-error").textContent = "";
  try {
    await api(`/v1/actions/${run}/${decision}`, { method: "POST", headers: bearer(), body: "{}" });
  } catch (e) {
    $("a-error").textContent = `run ${run}: ${e.message}`;
  }
  await approvals().catch(() => {});
  components().catch(() => {});
  if (state.selected != null) refresh(state.selected).catch(() => {});
}

function size(b) {
  if (b < 1 << 20) return `${Math.ceil(b / 1024)} KiB`;
  if (b < 1 << 30) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  return `${(b / (1 << 30)).toFixed(2)} GiB`;
}

// /v1/status at a glance: one row per component, a dot for its health.
async function components() {
  const s = await api("/v1/status");
  const rows = [];
  const row = (health, name, st, detail) => rows.push(el("tr", { "data-component": name },
    el("td", {}, el("span", { class: `dot ${health}`, title: health })), el("td", {}, name),
    el("td", {}, st), el("td", { class: "muted" }, detail)));
  const st = s.store || {};
  row(st.failing ? "bad" : st.errors ? "warn" : "ok", "store", st.failing ? "failing" : "ok",
    `${size(st.bytes_on_disk || 0)} on disk · ${st.errors || 0} error(s)` +
    (st.failing ? ` · ${st.failing}` : ""));
  const q = s.queues.events;
  row(q.len > q.capacity * 0.8 ? "warn" : "ok", "event queue", `${q.len}/${q.capacity}`,
    `${s.engine.events} events, ${s.engine.detections} detections, ${s.rules ?? "?"} rules`);
  const n = s.notifications;
  row(n.dead_lettered ? "warn" : "ok", "notifications", `${n.queued} queued`,
    `${n.delivered} delivered · ${n.failed_attempts} failed attempts · ${n.dead_lettered} dead-lettered`);
  const a = s.actions;
  row(a.failed ? "warn" : "ok", "actions", `${a.pending} pending`,
    `${a.succeeded} succeeded · ${a.failed} failed · ${a.held} held`);
  for (const i of s.inputs || []) {
    row(i.last_error ? "bad" : i.errors ? "warn" : "ok", `source ${i.id}`, i.kind,
      `${i.events} events · ${i.errors} error(s)` + (i.last_error ? ` · ${i.last_error}` : ""));
  }
  for (const p of s.plugins || []) {
    row(p.state !== "running" ? "bad" : p.restarts ? "warn" : "ok", `plugin ${p.name}`, p.state,
      `${p.kind} · ${p.restarts} restart(s)` + (p.last_error ? ` · ${p.last_error}` : ""));
  }
  if (s.reload && s.reload.last_error) row("warn", "reload", "failed", s.reload.last_error);
  $("components").tBodies[0].replaceChildren(...rows);
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
    approvals().catch(() => {});
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
    if (ev.type === "action") approvals().catch(() => {});
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
$("stage-move").addEventListener("click", moveStage);
for (const f of ["f-status", "f-severity", "f-service"]) $(f).addEventListener("input", render);
$("notify-btn").addEventListener("click", () => {
  if ("Notification" in window) Notification.requestPermission();
});
// The stream's every (re)connection loads the list again, so a failed first load recovers.
connect();
weeks().catch(() => {});
components().catch(() => {});
setInterval(() => { render(); weeks().catch(() => {}); }, 30000);
setInterval(() => { components().catch(() => {}); approvals().catch(() => {}); }, 5000);
