// admin.js: the inspection page (/admin). Plain JavaScript, no build step, no other origin.
//
// Everything it shows comes from the relay's own API, called with the publisher token typed into
// the page. The token is kept in this module's memory only (not sessionStorage: any script of the
// origin could read that, and it would outlive the page); it goes in the Authorization header of
// every call and never into a URL. Job data is written with textContent only: a job's meta or
// message is whatever a publisher sent.

import { ProgressRelay } from "../static/progress-relay.js";

const base = location.pathname.replace(/\/admin\/?$/, ""); // the relay's root (behind a prefix too)
const POLL_MS = 3000;
const PAGE = 50;
const LIVE_KEPT = 500;

let token = null;
let cursors = [null]; // the cursor of each page seen; the last one is the page shown
let nextCursor = null;
let selected = null; // { id, relay, watch, seen: { epoch, seq }, historyAfter }
let pollTimer = null;

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function api(path, init = {}) {
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(base + path, { ...init, headers, cache: "no-store" });
  let body = null;
  if (response.status !== 204) {
    try { body = await response.json(); } catch (error) { body = null; }
  }
  return { status: response.status, ok: response.ok, body };
}

function showError(what, result) {
  const box = $("message");
  const detail = result.body ? JSON.stringify(result.body, null, 2) : "(no body)";
  box.textContent = `${what}: HTTP ${result.status}\n${detail}`;
  box.hidden = false;
}

function clearError() {
  $("message").hidden = true;
  $("message").textContent = "";
}

function age(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function percentText(value) {
  return typeof value === "number" ? `${Math.round(value * 10) / 10} %` : "–";
}

function statusCell(status, cancelRequested) {
  const cell = el("td", cancelRequested && status !== "cancelled"
    ? `${status} (cancel requested)` : status, `status status-${status}`);
  return cell;
}

// -- signing in -------------------------------------------------------------------------------

async function start() {
  // A relay without publisher tokens answers the list without one: no need to ask.
  const probe = await api("/v1/jobs?limit=1");
  if (probe.ok) { signedIn("This relay needs no publisher token."); return; }
  if (probe.status === 401) { askToken(); return; }
  showError("Listing jobs failed", probe);
}

function askToken() {
  token = null;
  $("main").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  token = input.value.trim();
  input.value = "";
  const probe = await api("/v1/jobs?limit=1");
  if (!probe.ok) {
    token = null;
    showError("The token was not accepted", probe);
    input.focus();
    return;
  }
  signedIn("Signed in with a publisher token (kept in this page's memory).");
}

function signedIn(text) {
  clearError();
  $("login").hidden = true;
  $("main").hidden = false;
  $("session").hidden = false;
  $("session-text").textContent = text;
  $("sign-out").hidden = !token;
  refresh();
}

function signOut() {
  closeDetail();
  clearTimeout(pollTimer);
  askToken();
}

// -- the job list -----------------------------------------------------------------------------

async function refresh() {
  clearTimeout(pollTimer);
  const params = new URLSearchParams({ limit: String(PAGE) });
  const cursor = cursors[cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  const status = $("status-filter").value;
  if (status) params.set("status", status);
  const result = await api(`/v1/jobs?${params}`);
  if (result.status === 401) { showError("The relay refused the token", result); askToken(); return; }
  if (!result.ok) {
    showError("Listing jobs failed", result);
  } else {
    renderJobs(result.body.jobs);
    nextCursor = result.body.next_cursor;
    $("older").disabled = !nextCursor;
    $("newer").disabled = cursors.length < 2;
    $("list-state").textContent = `${result.body.jobs.length} jobs on this page, updated ${new Date().toLocaleTimeString()}`;
  }
  if (selected) await refreshSnapshot();
  pollTimer = setTimeout(refresh, POLL_MS);
}

function renderJobs(jobs) {
  const rows = jobs.map((job) => {
    const row = el("tr");
    row.dataset.job = job.id;
    if (selected && selected.id === job.id) row.className = "selected";
    const name = el("td");
    const open = el("button", job.id, "job");
    open.type = "button";
    open.addEventListener("click", () => openJob(job.id));
    name.append(open);
    row.append(name, statusCell(job.status, job.cancel_requested),
      el("td", percentText(job.percent), "percent"),
      el("td", job.subscribers, "subscribers"),
      el("td", age(job.created_at), "age"),
      el("td", job.stage ?? "", "stage"));
    return row;
  });
  const body = $("jobs").tBodies[0];
  if (!rows.length) {
    const row = el("tr");
    const cell = el("td", "No jobs.");
    cell.colSpan = 6;
    row.append(cell);
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

// -- one job ----------------------------------------------------------------------------------

class AdminRelay extends ProgressRelay {
  // Every event the stream delivers, whatever its name (the client's watchers see the names
  // it knows); shipped with progress-relay.js, so this hook moves with it.
  _dispatch(jobId, id, name, data) {
    super._dispatch(jobId, id, name, data);
    this._emit("event", jobId, id, name, data);
  }
}

function seqOf(id) {
  const dash = id ? id.lastIndexOf("-") : -1;
  return dash < 0 ? { epoch: "", seq: 0 } : { epoch: id.slice(0, dash), seq: Number(id.slice(dash + 1)) };
}

async function openJob(id) {
  closeDetail();
  clearError();
  const relay = new AdminRelay({ baseUrl: base, token, shared: false });
  selected = { id, relay, watch: null, seen: { epoch: null, seq: 0 }, historyAfter: null };
  $("detail").hidden = false;
  $("detail-id").textContent = id;
  $("action-result").textContent = "";
  $("live").replaceChildren();
  $("history").tBodies[0].replaceChildren();
  for (const row of $("jobs").tBodies[0].rows) row.classList.toggle("selected", row.dataset.job === id);
  await refreshSnapshot();
  await loadHistory();
  relay.on("connection", (state) => { if (selected?.relay === relay) $("live-state").textContent = `(stream ${state})`; });
  relay.on("error", (error) => { if (selected?.relay === relay) showError("The stream was refused", { status: error.code, body: { error } }); });
  relay.on("event", (jobId, eventId, name, data) => { if (selected?.relay === relay) liveEvent(eventId, name, data); });
  selected.watch = relay.watch(id);
  $("detail-heading").focus?.();
}

function closeDetail() {
  if (!selected) return;
  selected.watch?.close();
  selected = null;
  $("detail").hidden = true;
  $("live-state").textContent = "";
  for (const row of $("jobs").tBodies[0].rows) row.classList.remove("selected");
}

async function refreshSnapshot() {
  const job = selected;
  const result = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
  if (selected !== job) return;
  if (result.status === 404) {
    $("snapshot").textContent = "";
    $("summary").replaceChildren(el("dt", "status"), el("dd", "gone (deleted or expired)", "status"));
    return;
  }
  if (!result.ok) { showError("Reading the snapshot failed", result); return; }
  const snapshot = result.body;
  $("snapshot").textContent = JSON.stringify(snapshot, null, 2);
  const items = [
    ["status", snapshot.cancel_requested && snapshot.status !== "cancelled"
      ? `${snapshot.status} (cancel requested)` : snapshot.status],
    ["percent", percentText(snapshot.percent)],
    ["stage", snapshot.stage ?? "–"],
    ["message", snapshot.message ?? "–"],
    ["subscribers", snapshot.subscribers],
    ["age", age(snapshot.created_at)],
    ["last event", snapshot.last_event_id ?? "–"],
  ];
  $("summary").replaceChildren(...items.flatMap(([name, value]) => [el("dt", name), el("dd", value, `summary-${name.replace(" ", "-")}`)]));
}

async function loadHistory() {
  const job = selected;
  const params = new URLSearchParams({ limit: "100" });
  if (job.historyAfter) params.set("after", job.historyAfter);
  const result = await api(`/v1/jobs/${encodeURIComponent(job.id)}/events?${params}`);
  if (selected !== job) return;
  if (!result.ok) {
    if (result.status !== 404) showError("Reading the history failed", result);
    $("history-state").textContent = result.status === 404 ? "The job is gone." : "";
    $("history-more").hidden = true;
    return;
  }
  const rows = result.body.events.map((event) => {
    const row = el("tr");
    row.append(el("td", event.id), el("td", event.event), el("td", JSON.stringify(event.data), "data"));
    return row;
  });
  $("history").tBodies[0].append(...rows);
  job.historyAfter = result.body.next_after;
  $("history-more").hidden = !result.body.has_more;
  $("history-state").textContent = result.body.truncated
    ? "Older events are no longer retained." : "";
}

function liveEvent(id, name, data) {
  const seen = selected.seen;
  const { epoch, seq } = seqOf(id);
  if (id && name !== "reset") {
    if (epoch === seen.epoch && seq <= seen.seq) return; // a resume sent it again
    seen.epoch = epoch;
    seen.seq = seq;
  }
  const list = $("live");
  list.append(el("li", `${id ?? "(no id)"}  ${name}  ${JSON.stringify(data)}`));
  while (list.children.length > LIVE_KEPT) list.firstElementChild.remove();
  scheduleSnapshot();
}

let snapshotScheduled = false;
function scheduleSnapshot() {
  if (snapshotScheduled) return;
  snapshotScheduled = true;
  setTimeout(() => { snapshotScheduled = false; if (selected) refreshSnapshot(); }, 250);
}

async function cancelJob() {
  const id = selected.id;
  if (!confirm(`Ask the worker of job ${id} to cancel it?`)) return;
  const result = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  if (!result.ok) { showError(`Cancelling ${id} failed`, result); return; }
  clearError();
  $("action-result").textContent = `Cancellation requested: ${JSON.stringify(result.body)}`;
  await refreshSnapshot();
}

async function deleteJob() {
  const id = selected.id;
  if (!confirm(`Delete job ${id}, its snapshot and history? Its streams end.`)) return;
  const result = await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (!result.ok) { showError(`Deleting ${id} failed`, result); return; }
  clearError();
  closeDetail();
  $("list-state").textContent = `Job ${id} deleted.`;
  await refresh();
}

$("login").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
$("refresh").addEventListener("click", refresh);
$("status-filter").addEventListener("change", () => { cursors = [null]; refresh(); });
$("older").addEventListener("click", () => { if (nextCursor) { cursors.push(nextCursor); refresh(); } });
$("newer").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); refresh(); } });
$("cancel").addEventListener("click", cancelJob);
$("delete").addEventListener("click", deleteJob);
$("close").addEventListener("click", closeDetail);
$("history-more").addEventListener("click", loadHistory);
start();
