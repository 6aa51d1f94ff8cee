// progress-relay.js: the browser client of progress-relay. An ES module, no dependencies.
//
//   import { ProgressRelay } from "/static/progress-relay.js";
//   const relay = new ProgressRelay({ baseUrl: "https://relay.example.com", token });
//   const job = relay.watch("report-42");
//   job.on("progress", (data, job) => render(job.state));
//   job.on("complete", () => job.close());
//
// One multi-job stream (/v1/stream?job=A&job=B) carries every job this page (and every other tab
// of its origin) watches with the same token; jobs under different tokens get a stream each. It resumes
// with its last id after any interruption, including the ones where EventSource would give up
// (a 502/503 from a proxy): it is reopened with backoff, and ends for good on 204 and once every
// job has had its terminal event. Events are applied once per job (a seq
// at or below the job's last one is ignored), and `reset` replaces a job's state wholesale.

const TERMINAL = new Set(["complete", "failed", "cancelled"]);
const FINISHED_STATUS = { completed: 1, failed: 1, cancelled: 1 };

function seqOf(id) {
  // Ids are "<epoch>-<seq>"; clients otherwise treat them as opaque.
  const dash = id ? id.lastIndexOf("-") : -1;
  return dash < 0 ? { epoch: "", seq: 0 } : { epoch: id.slice(0, dash), seq: Number(id.slice(dash + 1)) };
}

function emptyState(id) {
  return {
    id, status: "pending", percent: null, stage: null, message: null, step: null,
    total_steps: null, eta_seconds: null, result: null, redirect_url: null, error: null,
    cancel_requested: false, logs: [], content: "", last_event_id: null,
  };
}

/** Named listeners; a listener that throws is logged and does not stop the others. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Returns a function that removes the listener. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

  _emit(name, ...args) {
    for (const fn of this._listeners.get(name) || []) {
      try { fn(...args); } catch (error) { console.error(error); }
    }
  }
}

/** One watched job: its state, kept from its events, and listeners. */
export class JobWatch extends Emitter {
  constructor(relay, id) {
    super();
    this.relay = relay;
    this.id = id;
    this.state = emptyState(id);
    this._epoch = null;
    this._seq = 0;
  }

  get finished() {
    return this.state.status in FINISHED_STATUS;
  }

  // `job.on(name, fn)`: fn(data, job); names: progress, log, content, complete, failed,
  // cancelled, reset, cancel_requested, state (after every change). Returns an unsubscribe.

  /** Ask the worker to cancel the job (it ends as `cancelled` when the worker says so). */
  async cancel() {
    const response = await this.relay._fetch(`/v1/jobs/${encodeURIComponent(this.id)}/cancel`,
      { method: "POST" });
    if (!response.ok && response.status !== 409) {
      throw new Error(`cancel failed: ${response.status}`);
    }
  }

  /** Stop watching this job. */
  close() {
    this.relay._unwatch(this);
  }

  _emit(name, data) {
    super._emit(name, data, this);
  }

  /** Apply one event of this job; false when it was already applied. */
  _apply(id, name, data) {
    const { epoch, seq } = seqOf(id);
    if (name !== "reset" && id && epoch === this._epoch && seq <= this._seq) return false;
    if (id) { this._epoch = epoch; this._seq = seq; }
    const state = this.state;
    if (id) state.last_event_id = id;
    switch (name) {
      case "reset":
        this._replace(data);
        break;
      case "progress":
        if (state.status === "pending") state.status = "running";
        for (const key of ["percent", "stage", "message", "step", "total_steps"]) {
          if (data[key] !== undefined && data[key] !== null) state[key] = data[key];
        }
        // The relay's estimate (the snapshot's, carried by every progress event): none here.
        state.eta_seconds = typeof data.eta_seconds === "number" ? data.eta_seconds : null;
        break;
      case "log":
        if (state.status === "pending") state.status = "running";
        state.logs.push({ id, at: new Date().toISOString(), level: data.level || "info",
          message: data.message });
        break;
      case "content":
        if (state.status === "pending") state.status = "running";
        state.content += data.text;
        break;
      case "cancel_requested":
        state.cancel_requested = true;
        break;
      case "complete":
        state.status = "completed";
        state.percent = 100;
        state.eta_seconds = null;
        if (data.result !== undefined) state.result = data.result;
        if (data.message) state.message = data.message;
        if (data.redirect_url) state.redirect_url = data.redirect_url;
        break;
      case "failed":
        state.status = "failed";
        state.error = { message: data.message, code: data.code || null };
        state.eta_seconds = null;
        break;
      case "cancelled":
        state.status = "cancelled";
        state.eta_seconds = null;
        if (data.message) state.message = data.message;
        break;
      default:
        if (state.status === "pending") state.status = "running";
    }
    this._emit(name, data);
    this._emit("state", this.state);
    return true;
  }

  _replace(snapshot) {
    const content = this.state.content;
    this.state = { ...emptyState(this.id), ...snapshot, content,
      logs: (snapshot.logs || []).map((entry) => ({ ...entry })) };
    const { epoch, seq } = seqOf(snapshot.last_event_id);
    if (snapshot.last_event_id) { this._epoch = epoch; this._seq = seq; }
  }
}

/** A connection to one relay, shared by every job this page watches and, where the browser has
 * Web Locks and BroadcastChannel, by every tab of the origin: the tab holding the lock (the
 * leader) keeps one stream for the jobs any tab watches and passes each event to the others.
 * When the leader closes or freezes, another tab takes the lock and resumes from the last id
 * every tab has seen; events are applied once per job, so nothing is lost or shown twice. */
export class ProgressRelay extends Emitter {
  constructor({ baseUrl = "", token = null, stallAfter = 45000, maxBackoff = 30000,
    shared = true } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
    this.stallAfter = stallAfter;
    this.maxBackoff = maxBackoff;
    this.connection = "closed";
    this.lastEventId = null;
    this.leader = false;
    this._jobs = new Map();
    this._source = null;
    this._streamed = new Set(); // job ids in the open stream
    this._ended = new Set(); // job ids whose terminal event went by
    this._remote = new Map(); // leader only: tab id -> job ids that tab watches
    this._covered = new Set(); // the jobs of the last leader's stream, as it announced them
    this._attempt = 0;
    this._retryTimer = null;
    this._stallTimer = null;
    this._stalled = false;
    this._tab = Math.random().toString(36).slice(2);
    this._shared = shared && typeof BroadcastChannel !== "undefined" && !!globalThis.navigator?.locks;
    if (this._shared) this._share();
  }

  /** Watch a job (the same handle for the same id). */
  watch(jobId) {
    let job = this._jobs.get(jobId);
    if (job) return job;
    job = new JobWatch(this, jobId);
    this._jobs.set(jobId, job);
    this._ended.delete(jobId);
    this._changed();
    return job;
  }

  // `relay.on("connection", fn)`: fn(state) on connecting/open/reconnecting/closed;
  // `relay.on("stall", fn)`: fn(true|false) when nothing (not even a heartbeat) arrived for
  // `stallAfter` ms, and when something did again; `relay.on("error", fn)`: fn({code, message})
  // when the relay refused the stream for good (401, 403).

  /** Close the stream, forget every job, and hand the stream to another tab. */
  close() {
    this._jobs.clear();
    this._stop();
    this._setConnection("closed");
    if (this._shared) {
      this._post({ t: "bye", tab: this._tab });
      this._unlock?.();
      this._channel.close();
      this._shared = false;
    }
  }

  // -- tabs ------------------------------------------------------------------------------

  _share() {
    // One stream per relay and token: a token granting other jobs cannot read these.
    const name = `progress-relay ${this.baseUrl || location.origin} ${this.token || ""}`;
    this._channel = new BroadcastChannel(name);
    this._channel.onmessage = (message) => this._onTabMessage(message.data);
    const lead = () => navigator.locks.request(name, () => new Promise((release) => {
      this._unlock = () => { this._unlock = null; release(); };
      this._lead();
    }));
    lead();
    // A frozen tab cannot forward events: it hands the stream over and asks again on resume.
    addEventListener("freeze", () => { if (this.leader) this._resign(); });
    addEventListener("resume", () => { if (this._shared && !this.leader && !this._unlock) lead(); });
    addEventListener("pagehide", () => this._post({ t: "bye", tab: this._tab }));
  }

  _lead() {
    this.leader = true;
    // The last leader's stream covered its jobs up to this id: a job of it that joins this
    // tab's stream later (once its tab has answered) resumes from here, not from a later id.
    this._coveredSince = this.lastEventId;
    this._remote.clear();
    this._post({ t: "who" }); // every tab answers with the jobs it watches
    this._schedule();
  }

  _resign() {
    this.leader = false;
    this._stop();
    this._streamed.clear();
    this._unlock?.();
  }

  _post(message) {
    if (this._shared) this._channel.postMessage(message);
  }

  _changed() {
    if (this.leader || !this._shared) this._schedule();
    else {
      this._post({ t: "jobs", tab: this._tab, jobs: [...this._jobs.keys()] });
      if (this.connection === "closed") this._setConnection("connecting");
    }
  }

  _onTabMessage(message) {
    switch (message.t) {
      case "who":
        if (!this.leader) this._post({ t: "jobs", tab: this._tab, jobs: [...this._jobs.keys()] });
        break;
      case "jobs":
        if (this.leader) {
          const before = this._remote.get(message.tab) || new Set();
          // A job a tab starts to watch is followed again even if it ended: the tab needs
          // its state (a snapshot) once.
          for (const id of message.jobs) if (!before.has(id)) this._ended.delete(id);
          this._remote.set(message.tab, new Set(message.jobs));
          this._post({ t: "conn", state: this.connection, jobs: [...this._streamed] });
          this._schedule();
        }
        break;
      case "bye":
        if (this.leader) this._remote.delete(message.tab);
        break;
      case "ev":
        if (!this.leader) this._dispatch(message.job, message.id, message.name, message.data);
        break;
      case "conn":
        if (!this.leader) {
          this._covered = new Set(message.jobs);
          this._setConnection(message.state);
        }
        break;
    }
  }

  // -- the stream (leader, or a tab on its own) ------------------------------------------

  _setConnection(state) {
    if (this.leader) this._post({ t: "conn", state, jobs: [...this._streamed] });
    if (this.connection === state) return;
    this.connection = state;
    this._emit("connection", state);
  }

  _fetch(path, init = {}) {
    const headers = { ...(init.headers || {}) };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return fetch(this.baseUrl + path, { ...init, headers, credentials: "include" });
  }

  _unwatch(job) {
    if (this._jobs.get(job.id) !== job) return;
    this._jobs.delete(job.id);
    this._changed();
  }

  /** The jobs the stream should follow: every tab's, less the ended ones. */
  _wanted() {
    const ids = new Set(this._jobs.keys());
    for (const jobs of this._remote.values()) for (const id of jobs) ids.add(id);
    for (const id of this._ended) ids.delete(id);
    return [...ids].sort();
  }

  /** (Re)open the stream when the jobs it should follow changed, once per turn of the event
   * loop however many changed in it. A job new to a stream that already has a last id gets its
   * snapshot first (as a `reset`): the last id then resumes the other jobs exactly, and the
   * snapshot covers everything of the new job up to that id. */
  _schedule() {
    if (this._scheduled) return;
    this._scheduled = true;
    setTimeout(async () => {
      this._scheduled = false;
      const wanted = this._wanted();
      if (this._source && wanted.length === this._streamed.size &&
          wanted.every((id) => this._streamed.has(id))) return;
      // What the stream (this tab's, or the last leader's) already covered up to the last id
      // needs no snapshot.
      const fresh = wanted.filter((id) => !this._streamed.has(id));
      const added = fresh.filter((id) => !this._covered.has(id));
      const since = fresh.length > added.length ? this._coveredSince : null;
      this._stop();
      if (this.lastEventId) {
        await Promise.all(added.map(async (id) => {
          try {
            const response = await this._fetch(`/v1/jobs/${encodeURIComponent(id)}`);
            if (response.ok) this._dispatch(id, null, "reset", await response.json());
          } catch (error) { /* the stream's own reset covers it */ }
        }));
      }
      // Resuming from the earlier id sends some events again; each job applies them once.
      if (!this._scheduled && (this.leader || !this._shared)) this._open(since);
    }, 0);
  }

  /** The stream is read with fetch rather than EventSource: it sees heartbeats (for the stall
   * warning), status codes (204 ends for good; a 502/503 is retried, where EventSource would
   * give up) and can send the token as a header. */
  async _open(since = null) {
    const wanted = this._wanted();
    if (!wanted.length) { this._setConnection("closed"); return; }
    const params = new URLSearchParams();
    for (const id of wanted) params.append("job", id);
    const headers = { Accept: "text/event-stream" };
    const from = since || this.lastEventId;
    if (from) headers["Last-Event-ID"] = from;
    const controller = new AbortController();
    this._source = controller;
    this._streamed = new Set(wanted);
    for (const id of wanted) this._covered.delete(id);
    this._setConnection(this._attempt ? "reconnecting" : "connecting");
    let retryAfter = null;
    try {
      const response = await this._fetch(`/v1/stream?${params}`,
        { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 204) { this._finish(controller); return; }
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        const body = await response.json().catch(() => ({}));
        this._emit("error", body.error || { code: String(response.status) });
        this._finish(controller);
        return;
      }
      if (!response.ok) {
        retryAfter = Number(response.headers.get("Retry-After")) * 1000 || null;
        throw new Error(`stream answered ${response.status}`);
      }
      this._attempt = 0;
      this._setConnection("open");
      this._alive();
      await this._read(response.body, controller);
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (this._source !== controller) return;
    this._source = null;
    if (this._wanted().length) this._retry(retryAfter); else this._setConnection("closed");
  }

  async _read(body, controller) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this._source !== controller) return;
      this._alive();
      buffer += value;
      const frames = buffer.split(/\r\n\r\n|\n\n|\r\r/);
      buffer = frames.pop();
      for (const frame of frames) this._onFrame(frame, controller);
    }
  }

  _onFrame(text, controller) {
    let id = null, name = "message", data = [];
    for (const line of text.split(/\r\n|\n|\r/)) {
      const colon = line.indexOf(":");
      if (colon === 0) continue; // a comment: the heartbeat
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) this._serverRetry = Number(value);
    }
    if (!data.length) return;
    let frame;
    try { frame = JSON.parse(data.join("\n")); } catch (error) { return; }
    this._dispatch(frame.job, id, name, frame.data);
    if (!this._wanted().length) this._finish(controller);
  }

  /** One event of one job, from the stream or from the leader: to this tab's watcher, and
   * (from the leader) to every other tab. */
  _dispatch(jobId, id, name, data) {
    if (id) this.lastEventId = id;
    if (TERMINAL.has(name) || (name === "reset" && data?.status in FINISHED_STATUS)) {
      this._ended.add(jobId);
    }
    if (this.leader) this._post({ t: "ev", job: jobId, id, name, data });
    this._jobs.get(jobId)?._apply(id, name, data);
  }

  _finish(controller) {
    if (this._source === controller) this._stop();
    this._setConnection("closed");
  }

  _retry(retryAfter) {
    const base = Math.max(this._serverRetry || 0, 500 * 2 ** this._attempt);
    const delay = retryAfter || Math.min(this.maxBackoff, base) * (0.5 + Math.random() / 2);
    this._attempt += 1;
    this._setConnection("reconnecting");
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delay);
  }

  _alive() {
    clearTimeout(this._stallTimer);
    if (this._stalled) { this._stalled = false; this._emit("stall", false); }
    this._stallTimer = setTimeout(() => { this._stalled = true; this._emit("stall", true); },
      this.stallAfter);
  }

  _stop() {
    if (this._source) { this._source.abort(); this._source = null; }
    this._streamed = new Set();
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    clearTimeout(this._stallTimer);
  }
}

// -- <job-progress job="..." base-url="..." token="..."> ------------------------------------

const relays = new Map();

/** The relay for these settings, shared by every element that uses them. */
export function sharedRelay(baseUrl = "", token = null) {
  const key = `${baseUrl} ${token || ""}`;
  if (!relays.has(key)) relays.set(key, new ProgressRelay({ baseUrl, token }));
  return relays.get(key);
}

const STYLE = `
:host { display: block; font: 14px/1.4 system-ui, sans-serif; border: 1px solid #ccd;
  border-radius: 6px; padding: 10px 12px; margin: 8px 0; }
.top { display: flex; gap: 8px; align-items: baseline; }
.title { font-weight: 600; flex: 1; overflow-wrap: anywhere; }
.status { font-size: 12px; padding: 1px 6px; border-radius: 8px; background: #eef; }
.bar { height: 10px; background: #eef; border-radius: 5px; overflow: hidden; margin: 8px 0 4px; }
.fill { height: 100%; width: 0; background: #4a7; transition: width .2s; }
:host([status="failed"]) .fill { background: #c44; }
:host([status="cancelled"]) .fill { background: #999; }
.line { display: flex; gap: 8px; color: #445; font-size: 13px; }
.message { flex: 1; overflow-wrap: anywhere; }
.error { color: #b22; margin-top: 4px; overflow-wrap: anywhere; }
.content { margin-top: 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
ol { margin: 4px 0 0; padding-left: 20px; max-height: 12em; overflow: auto; font-size: 12px; }
li[data-level="warning"] { color: #a60; } li[data-level="error"] { color: #b22; }
li[data-level="success"] { color: #272; } li[data-level="debug"] { color: #889; }
button { margin-left: 8px; }
`;

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

/** A job's progress: bar with percent, stage, message and ETA; the `content` it streamed; its
 * log; its end; a cancel button. Everything from the job is set as text, never as HTML. */
export class JobProgressElement extends (globalThis.HTMLElement || class {}) {
  static get observedAttributes() { return ["job"]; }

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${STYLE}</style>
      <div class="top"><span class="title" part="title"></span>
        <span class="status" part="status"></span><button part="cancel">Cancel</button></div>
      <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100">
        <div class="fill"></div></div>
      <div class="line"><span class="stage"></span><span class="message"></span>
        <span class="percent"></span><span class="eta"></span></div>
      <div class="content" part="content" hidden></div>
      <div class="error" hidden></div>
      <details><summary>Log (<span class="count">0</span>)</summary><ol></ol></details>`;
    this._$ = (selector) => root.querySelector(selector);
    this._$("button").addEventListener("click", () => this._cancel());
  }

  connectedCallback() { this._follow(); }
  disconnectedCallback() { this._unfollow(); }
  attributeChangedCallback() { if (this.isConnected) this._follow(); }

  /** The JobWatch this element shows. */
  get watch() { return this._watch || null; }

  _follow() {
    this._unfollow();
    const id = this.getAttribute("job");
    if (!id) return;
    const relay = sharedRelay(this.getAttribute("base-url") || "", this.getAttribute("token"));
    this._watch = relay.watch(id);
    this._$(".title").textContent = this.getAttribute("label") || id;
    this._off = this._watch.on("state", (state) => this._render(state));
    this._render(this._watch.state);
  }

  _unfollow() {
    this._off?.();
    this._off = null;
  }

  async _cancel() {
    const button = this._$("button");
    button.disabled = true;
    button.textContent = "Cancelling…";
    try { await this._watch?.cancel(); } catch (error) {
      button.disabled = false;
      button.textContent = "Cancel";
    }
  }

  _render(state) {
    const $ = this._$;
    this.setAttribute("status", state.status);
    const percent = typeof state.percent === "number" ? Math.round(state.percent) : null;
    const bar = $(".bar");
    if (percent === null) bar.removeAttribute("aria-valuenow");
    else bar.setAttribute("aria-valuenow", String(percent));
    $(".fill").style.width = `${percent ?? 0}%`;
    $(".status").textContent = state.cancel_requested && state.status === "running"
      ? "cancelling" : state.status;
    $(".stage").textContent = state.stage || "";
    $(".message").textContent = state.message || "";
    $(".percent").textContent = percent === null ? "" : `${percent} %`;
    $(".eta").textContent = state.status === "running" ? eta(state.eta_seconds) : "";
    const content = $(".content");
    content.hidden = !state.content;
    content.textContent = state.content;
    const error = $(".error");
    error.hidden = !state.error;
    error.textContent = state.error ? state.error.message : "";
    const finished = state.status in FINISHED_STATUS;
    const button = $("button");
    button.hidden = finished;
    if (state.cancel_requested) { button.disabled = true; button.textContent = "Cancelling…"; }
    const list = $("ol");
    if (state.logs !== this._logs) { list.replaceChildren(); this._logs = state.logs; } // a reset
    for (const entry of state.logs.slice(list.childElementCount)) {
      const item = document.createElement("li");
      item.dataset.level = entry.level || "info";
      item.textContent = entry.message;
      list.append(item);
    }
    $(".count").textContent = String(state.logs.length);
  }
}

if (globalThis.customElements && !customElements.get("job-progress")) {
  customElements.define("job-progress", JobProgressElement);
}
