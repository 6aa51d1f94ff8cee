// progress-relay.js: the browser client of progress-relay. An ES module, no dependencies.
//
//   import { ProgressRelay } from "/static/progress-relay.js";
//   const relay = new ProgressRelay({ baseUrl: "https://relay.example.com", token });
//   const job = relay.watch("report-42");
//   job.on("progress", (data, job) => render(job.state));
//   job.on("complete", () => job.close());
//
// One multi-job stream (/v1/stream?job=A&job=B) carries every job this page watches. It resumes
// with its last id after any interruption, including the ones where EventSource would give up
// (a 502/503 from a proxy): it is reopened with backoff, and ends for good on 204 and once every
// job has had its terminal event. Events are applied once per job (a seq
// at or below the job's last one is ignored), and `reset` replaces a job's state wholesale.

const TERMINAL = new Set(["complete", "failed", "cancelled"]);
const FINISHED = { complete: "completed", failed: "failed", cancelled: "cancelled" };

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

/** One watched job: its state, kept from its events, and listeners. */
export class JobWatch {
  constructor(relay, id) {
    this.relay = relay;
    this.id = id;
    this.state = emptyState(id);
    this._listeners = new Map();
    this._epoch = null;
    this._seq = 0;
    this._progressAt = null; // [time, percent] of the first progress seen, for the ETA
  }

  get finished() {
    return this.state.status in { completed: 1, failed: 1, cancelled: 1 };
  }

  /** `job.on(name, fn)`: fn(data, job); names: progress, log, content, complete, failed,
   * cancelled, reset, cancel_requested, state (after every change). Returns an unsubscribe. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

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
    for (const fn of this._listeners.get(name) || []) {
      try { fn(data, this); } catch (error) { console.error(error); }
    }
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
        this._estimate();
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
        state.eta_seconds = 0;
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
    this._emit("state", state);
    return true;
  }

  _replace(snapshot) {
    const content = this.state.content;
    this.state = { ...emptyState(this.id), ...snapshot, content,
      logs: (snapshot.logs || []).map((entry) => ({ ...entry })) };
    const { epoch, seq } = seqOf(snapshot.last_event_id);
    if (snapshot.last_event_id) { this._epoch = epoch; this._seq = seq; }
  }

  _estimate() {
    const percent = this.state.percent;
    if (typeof percent !== "number") return;
    const now = Date.now() / 1000;
    if (!this._progressAt || percent < this._progressAt[1]) { this._progressAt = [now, percent]; return; }
    const [t0, p0] = this._progressAt;
    if (percent > p0 && percent < 100) {
      this.state.eta_seconds = Math.round(((now - t0) * (100 - percent)) / (percent - p0));
    }
  }
}

/** A connection to one relay, shared by every job this page watches. */
export class ProgressRelay {
  constructor({ baseUrl = "", token = null, stallAfter = 45000, maxBackoff = 30000 } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
    this.stallAfter = stallAfter;
    this.maxBackoff = maxBackoff;
    this.connection = "closed";
    this.lastEventId = null;
    this._jobs = new Map();
    this._listeners = new Map();
    this._source = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._stallTimer = null;
    this._stalled = false;
  }

  /** Watch a job (the same handle for the same id). */
  watch(jobId) {
    let job = this._jobs.get(jobId);
    if (job) return job;
    job = new JobWatch(this, jobId);
    this._jobs.set(jobId, job);
    this._reconnect(job);
    return job;
  }

  /** `relay.on("connection", fn)`: fn(state) on connecting/open/reconnecting/closed;
   * `relay.on("stall", fn)`: fn(true|false) when nothing (not even a heartbeat) arrived for
   * `stallAfter` ms, and when something did again; `relay.on("error", fn)`: fn({code, message})
   * when the relay refused the stream for good (401, 403). */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name).delete(fn);
  }

  /** Close the stream and forget every job. */
  close() {
    this._jobs.clear();
    this._stop();
    this._setConnection("closed");
  }

  _emit(name, value) {
    for (const fn of this._listeners.get(name) || []) {
      try { fn(value); } catch (error) { console.error(error); }
    }
  }

  _setConnection(state) {
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
    this._schedule(null);
  }

  _live() {
    return [...this._jobs.values()].filter((job) => !job.finished);
  }

  _reconnect(added) {
    this._schedule(added);
  }

  /** (Re)open the stream for the jobs still running, once per turn of the event loop however
   * many jobs were watched in it. A job new to a stream that already has a last id gets its
   * snapshot first: the last id then resumes the other jobs exactly, and the snapshot covers
   * everything of the new job up to that id. */
  _schedule(added) {
    if (added) (this._added ||= new Set()).add(added);
    if (this._scheduled) return;
    this._scheduled = true;
    setTimeout(async () => {
      this._scheduled = false;
      const added = [...(this._added || [])];
      this._added = null;
      this._stop();
      if (this.lastEventId) {
        await Promise.all(added.map(async (job) => {
          try {
            const response = await this._fetch(`/v1/jobs/${encodeURIComponent(job.id)}`);
            if (response.ok) job._apply(null, "reset", await response.json());
          } catch (error) { /* the stream's own reset covers it */ }
        }));
      }
      if (!this._scheduled) this._open();
    }, 0);
  }

  /** The stream is read with fetch rather than EventSource: it sees heartbeats (for the stall
   * warning), status codes (204 ends for good; a 502/503 is retried, where EventSource would
   * give up) and can send the token as a header. */
  async _open() {
    const live = this._live();
    if (!live.length) { this._setConnection("closed"); return; }
    const params = new URLSearchParams();
    for (const job of live) params.append("job", job.id);
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    this._setConnection(this._attempt ? "reconnecting" : "connecting");
    const controller = new AbortController();
    this._source = controller;
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
    if (this._live().length) this._retry(retryAfter); else this._setConnection("closed");
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
    if (id) this.lastEventId = id;
    const job = this._jobs.get(frame.job);
    if (job) job._apply(id, name, frame.data);
    if (TERMINAL.has(name) && !this._live().length) this._finish(controller);
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
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    clearTimeout(this._stallTimer);
  }
}
