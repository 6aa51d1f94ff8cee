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
// A job watched while the stream already carries it is first read from the relay (its retained
// history, else its snapshot), so a late tab starts from the job's state as it stands
// (docs/browser.md, "How tabs share one stream").

const TERMINAL = new Set(["complete", "failed", "cancelled"]);
const FINISHED_STATUS = { completed: 1, failed: 1, cancelled: 1 };
// Events a watch holds while it reads its job; past this many it drops them and reads again
// (the new read covers them).
const HOLD_LIMIT = 10000;
// Events per request when a watch reads its job's history (the relay's maximum).
const HISTORY_PAGE = 1000;

function seqOf(id) {
  // Ids are "<epoch>-<seq>"; clients otherwise treat them as opaque.
  const dash = id ? id.lastIndexOf("-") : -1;
  return dash < 0 ? { epoch: "", seq: 0 } : { epoch: id.slice(0, dash), seq: Number(id.slice(dash + 1)) };
}

function emptyState(id) {
  return {
    id, status: "pending", percent: null, stage: null, message: null, step: null,
    total_steps: null, eta_seconds: null, result: null, redirect_url: null, error: null,
    cancel_requested: false, logs: [], content: "", content_truncated: false,
    last_event_id: null,
  };
}

/** Milliseconds before retry number `attempt` (from 0): doubling from 0.5 s up to `max`,
 * with jitter. */
function backoff(attempt, max) {
  return Math.min(max, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** UTF-8 bytes of one UTF-16 code unit at `i` of `text`, and how many units it takes (a
 * surrogate pair is one 4-byte character). */
function utf8At(text, i) {
  const c = text.charCodeAt(i);
  if (c < 0x80) return [1, 1];
  if (c < 0x800) return [2, 1];
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) return [4, 2];
  return [3, 1];
}

function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length;) {
    const [size, units] = utf8At(text, i);
    bytes += size;
    i += units;
  }
  return bytes;
}

/** The streamed text by the relay's rule (wire/content.py): its newest `bound` UTF-8 bytes,
 * from a character's start. [text, bytes, whether anything was dropped]. */
function boundText(text, bytes, bound) {
  let start = 0;
  while (bytes > bound && start < text.length) {
    const [size, units] = utf8At(text, start);
    bytes -= size;
    start += units;
  }
  return [start ? text.slice(start) : text, bytes, start > 0];
}

/** One SSE frame's fields: `data` null when it has none (a heartbeat), `retry` null unless set. */
function parseFrame(text) {
  let id = null, name = "message", retry = null;
  const data = [];
  for (const line of text.split(/\r\n|\n|\r/)) {
    const colon = line.indexOf(":");
    if (colon === 0) continue; // a comment: the heartbeat
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
  }
  return { id, name, data: data.length ? data.join("\n") : null, retry };
}

/** Read an SSE body frame by frame while `current()` holds; `alive()` on every chunk. */
async function readFrames(body, current, alive, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || !current()) return;
    alive();
    buffer += value;
    const frames = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    buffer = frames.pop();
    for (const frame of frames) onFrame(parseFrame(frame));
  }
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

/** One watched job: its state, kept from its events, and listeners.
 *
 * A new watch holds the job's events until the stream that carries them has been announced
 * (`_announced`). If that stream is still to replay the job from its start, the watch just follows
 * it; otherwise it reads the job from the relay first (`_catchUp`: the retained history from the
 * job's first event, or the snapshot when the relay no longer holds all of it) and then applies
 * the held events newer than what it read. */
export class JobWatch extends Emitter {
  constructor(relay, id) {
    super();
    this.relay = relay;
    this.id = id;
    this.state = emptyState(id);
    this._epoch = null;
    this._seq = 0;
    this._phase = "waiting"; // waiting (for the stream) | reading | live | closed
    this._held = [];
    this._overflow = false;
    this._contentBytes = 0; // UTF-8 bytes of state.content
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

  /** One event of this job from the stream: applied, or held while the watch catches up. */
  _receive(id, name, data) {
    if (this._phase === "live") this._apply(id, name, data);
    else if (this._phase !== "closed") {
      if (this._held.length >= HOLD_LIMIT) { this._held = []; this._overflow = true; }
      this._held.push([id, name, data]);
    }
  }

  /** The stream that carries this job's events has been announced, its starting position
   * fixed: every event of the job after that position comes through it. `whole`: the stream
   * is still to replay the job from its start (history, or a `reset`), so it brings the whole
   * state; otherwise the job's past is read now, and the events held meanwhile follow. */
  _announced(whole) {
    if (this._phase !== "waiting") return;
    if (whole) {
      this._held = []; // the replay brings these again
      this._live();
    } else this._catchUp();
  }

  async _catchUp() {
    this._phase = "reading";
    for (let attempt = 0; ;) {
      this._overflow = false;
      try {
        await this._read();
        if (this._phase !== "reading") return;
        if (!this._overflow) break; // else the dropped events came before a new read
      } catch (error) {
        if (this._phase !== "reading") return;
        await sleep(backoff(attempt++, this.relay.maxBackoff));
        if (this._phase !== "reading") return;
      }
    }
    this._live();
  }

  /** Apply the job as the relay has it now: its whole retained history, or its snapshot (a
   * `reset`) when the history no longer starts at the job's first event. Nothing for a job
   * the relay does not know (yet) or will not show this tab (the stream reports that). */
  async _read() {
    const path = `/v1/jobs/${encodeURIComponent(this.id)}`;
    const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    for (;;) {
      const page = await this._get(`${path}/events?${query}`);
      if (!page) return;
      if (page.truncated) break;
      for (const event of page.events) this._apply(event.id, event.event, event.data);
      if (!page.has_more) return;
      query.set("after", page.next_after);
    }
    const snapshot = await this._get(path);
    if (snapshot) this._apply(null, "reset", snapshot);
  }

  async _get(path) {
    const response = await this.relay._fetch(path, { cache: "no-store" });
    if ([401, 403, 404].includes(response.status)) return null;
    if (!response.ok) throw new Error(`${path} answered ${response.status}`);
    return response.json();
  }

  _live() {
    const held = this._held;
    this._held = [];
    this._phase = "live";
    for (const [id, name, data] of held) this._apply(id, name, data);
  }

  /** Apply one event of this job; false when it was already applied. A `reset` that is not
   * newer than what the watch has applied is ignored too: it says nothing new, and the events
   * it would replace may hold more (every log line, the whole text). */
  _apply(id, name, data) {
    const position = name === "reset" ? data?.last_event_id : id;
    if (position) {
      const { epoch, seq } = seqOf(position);
      if (epoch === this._epoch && seq <= this._seq) return false;
      this._epoch = epoch;
      this._seq = seq;
    }
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
        // The snapshot's tail: the last `logTail` entries.
        if (state.logs.length > this.relay.logTail) {
          state.logs.splice(0, state.logs.length - this.relay.logTail);
        }
        break;
      case "content":
        if (state.status === "pending") state.status = "running";
        this._setContent(state.content + data.text, this._contentBytes + utf8Length(data.text),
          state.content_truncated);
        break;
      case "cancel_requested":
        state.cancel_requested = true;
        break;
      // The terminal events change the state as the relay's snapshot does
      // (wire/snapshot.py: changes), so a reloaded tab shows what a live one showed.
      case "complete":
        state.status = "completed";
        state.percent = 100;
        state.eta_seconds = null;
        state.result = data.result ?? null;
        state.redirect_url = data.redirect_url ?? null;
        if (data.message !== undefined && data.message !== null) state.message = data.message;
        break;
      case "failed":
        state.status = "failed";
        state.error = { message: data.message, code: data.code ?? null, details: data.details ?? null };
        state.message = data.message;
        state.eta_seconds = null;
        break;
      case "cancelled":
        state.status = "cancelled";
        state.eta_seconds = null;
        if (data.message !== undefined && data.message !== null) state.message = data.message;
        break;
      default:
        if (state.status === "pending") state.status = "running";
    }
    this._emit(name, data);
    this._emit("state", this.state);
    return true;
  }

  _replace(snapshot) {
    const previous = this.state;
    // A relay that keeps no streamed text sends a snapshot without `content`: the text is then
    // unknown, and what this tab has of it stays.
    const known = typeof snapshot.content === "string";
    this.state = {
      ...emptyState(this.id), ...snapshot,
      logs: (snapshot.logs || []).slice(-this.relay.logTail).map((entry) => ({ ...entry })),
    };
    if (known) {
      this._setContent(snapshot.content, utf8Length(snapshot.content),
        snapshot.content_truncated === true);
    } else {
      this.state.content = previous.content;
      this.state.content_truncated = previous.content_truncated;
    }
  }

  _setContent(text, bytes, truncated) {
    const [content, size, dropped] = boundText(text, bytes, this.relay.contentBytes);
    this.state.content = content;
    this.state.content_truncated = truncated || dropped;
    this._contentBytes = size;
  }
}

/** A JobWatch that a group's stream feeds (one of its jobs): events are applied as they come. */
function groupPart(relay, id) {
  const watch = new JobWatch(relay, id);
  watch._phase = "live";
  return watch;
}

const GROUP_COUNTS = ["pending", "running", "completed", "failed", "cancelled"];

/** A watched group: a parent job and its children (docs/api.md, "Groups"), followed through
 * the parent's own stream, `GET /v1/jobs/{parent}/stream?children=true`, which carries the
 * parent's events and every child's. `state` is the parent's state with `children`, each
 * child's state in the group's order; a new object after every change.
 *
 * A new watch opens the stream with `replay=snapshot`: it starts with the group's `reset` (the
 * parent's snapshot and each child's: one frame with `children`, or a `reset` per job), so a watch that starts late starts from the group
 * as it stands, and every later event comes through the same stream. After an interruption it
 * resumes from its last id (the relay then sends exactly the missed events of every job of the
 * group, or a `reset`); each job applies an event once (JobWatch, by its seq). The stream is
 * this tab's own (a group is not shared with the origin's other tabs), and it ends with the
 * parent's terminal event. */
export class GroupWatch extends Emitter {
  constructor(relay, id) {
    super();
    this.relay = relay;
    this.id = id;
    this.parent = groupPart(relay, id);
    this.connection = "closed";
    this._children = new Map(); // child id -> JobWatch
    this._order = []; // child ids, in the group's order
    this._from = null; // the stream's last id: where a reopened stream resumes
    this._attempt = 0;
    this._serverRetry = 0;
    this._source = null;
    this._retryTimer = null;
    this._looking = false;
    this._closed = false;
    this._compose();
    this._open();
  }

  // `group.on(name, fn)`: fn(data, group) for the parent's events (progress, complete, failed,
  // cancelled, reset, …); `state`: fn(state, group) after every change; `child`: fn(childState,
  // group) after a child's event; `connection`: fn(connectionState, group); `error`: fn({code,
  // message}, group) when the relay refused the stream for good.

  get finished() {
    return this.parent.finished;
  }

  /** The JobWatch of one child of the group (null for an id not seen in it). */
  child(id) {
    return this._children.get(id) || null;
  }

  /** Ask every unfinished child's worker to cancel (a cancel on the parent). */
  cancel() {
    return this.parent.cancel();
  }

  /** Stop following the group. */
  close() {
    this._closed = true;
    this._stop();
    if (this.relay._groups.get(this.id) === this) this.relay._groups.delete(this.id);
    this._setConnection("closed");
  }

  _emit(name, data) {
    super._emit(name, data, this);
  }

  _setConnection(state) {
    if (this.connection === state) return;
    this.connection = state;
    this._emit("connection", state);
  }

  async _open() {
    if (this._closed) return;
    const controller = new AbortController();
    this._source = controller;
    const params = new URLSearchParams({ children: "true" });
    const headers = { Accept: "text/event-stream" };
    if (this._from) headers["Last-Event-ID"] = this._from;
    else params.set("replay", "snapshot");
    this._setConnection(this._attempt ? "reconnecting" : "connecting");
    let retryAfter = null;
    try {
      const response = await this.relay._fetch(
        `/v1/jobs/${encodeURIComponent(this.id)}/stream?${params}`,
        { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 204) { this._end(controller); return; }
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        const body = await response.json().catch(() => ({}));
        this._emit("error", body.error || { code: String(response.status) });
        this._end(controller);
        return;
      }
      if (!response.ok) {
        retryAfter = Number(response.headers.get("Retry-After")) * 1000 || null;
        throw new Error(`group stream answered ${response.status}`);
      }
      this._attempt = 0;
      this._setConnection("open");
      await readFrames(response.body, () => this._source === controller, () => {},
        (frame) => this._onFrame(frame, controller));
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (this._source !== controller) return;
    this._source = null;
    if (this.finished) { this._setConnection("closed"); return; }
    const base = Math.max(this._serverRetry, 500 * 2 ** this._attempt);
    const delay = retryAfter || Math.min(this.relay.maxBackoff, base) * (0.5 + Math.random() / 2);
    this._attempt += 1;
    this._setConnection("reconnecting");
    this._retryTimer = setTimeout(() => { this._retryTimer = null; this._open(); }, delay);
  }

  _end(controller) {
    if (this._source === controller) this._stop();
    this._setConnection("closed");
  }

  _stop() {
    if (this._source) { this._source.abort(); this._source = null; }
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
  }

  _onFrame({ id, name, data, retry }, controller) {
    if (retry !== null) this._serverRetry = retry;
    if (data === null) return;
    let frame;
    try { frame = JSON.parse(data); } catch (error) { return; }
    if (id) this._from = id;
    if (name === "reset" && (frame.job === this.id || frame.children)) this._reset(id, frame);
    else if (frame.job === this.id) this._onParent(id, name, frame.data);
    else if (frame.job) this._onChild(frame.job, id, name, frame.data);
    if (this.finished) this._end(controller);
  }

  /** The group as the relay has it: the parent's snapshot and each child's (without its
   * streamed text: a child keeps what it had of it). */
  _reset(id, frame) {
    const applied = this.parent._apply(id, "reset", frame.data || {});
    this._learn(this.parent.state.group?.children || []);
    for (const snapshot of frame.children || []) {
      if (snapshot?.id) this._part(snapshot.id)._apply(null, "reset", snapshot);
    }
    this._changed();
    if (applied) this._emit("reset", frame.data);
  }

  _onParent(id, name, data) {
    if (!this.parent._apply(id, name, data)) return;
    // The relay's aggregate, carried by the parent's progress: counts, total, failed ids.
    if (name === "progress" && data?.group) {
      this.parent.state.group = { ...this.parent.state.group, ...data.group };
      if (data.group.total > this._order.length) this._lookUp();
    }
    this._changed();
    this._emit(name, data);
  }

  _onChild(childId, id, name, data) {
    const child = this._part(childId);
    if (!child._apply(id, name, data)) return;
    this._changed();
    this._emit("child", child.state);
  }

  _part(id) {
    let child = this._children.get(id);
    if (!child) {
      child = groupPart(this.relay, id);
      this._children.set(id, child);
      this._order.push(id);
    }
    return child;
  }

  /** The group's children in its order (the parent's `group.children`); any other seen child
   * after them. */
  _learn(ids) {
    for (const id of ids) this._part(id);
    const listed = new Set(ids);
    this._order = [...ids, ...this._order.filter((id) => !listed.has(id))];
  }

  /** Children were added that have sent nothing yet: their ids from the parent's snapshot. */
  async _lookUp() {
    if (this._looking) return;
    this._looking = true;
    try {
      const response = await this.relay._fetch(`/v1/jobs/${encodeURIComponent(this.id)}`,
        { cache: "no-store" });
      const snapshot = response.ok ? await response.json() : null;
      if (snapshot?.group?.children && !this._closed) {
        this._learn(snapshot.group.children);
        this._changed();
      }
    } catch (error) {
      // The next progress with more children than known looks again.
    } finally {
      this._looking = false;
    }
  }

  _changed() {
    this._compose();
    this._emit("state", this.state);
  }

  _compose() {
    const parent = this.parent.state;
    const children = this._order.map((id) => this._children.get(id).state);
    const counts = Object.fromEntries(GROUP_COUNTS.map((status) => [status, 0]));
    for (const child of children) counts[child.status] += 1;
    // The relay's counts (from the parent's snapshot and progress) where it sent them, else
    // the children's as this tab has them.
    const group = {
      counts, total: children.length,
      failed: children.filter((child) => child.status === "failed").map((child) => child.id),
      ...parent.group, children: [...this._order],
    };
    this.state = { ...parent, group, children };
  }
}

/** A connection to one relay, shared by every job this page watches and, where the browser has
 * Web Locks and BroadcastChannel, by every tab of the origin: the tab holding the lock (the
 * leader) keeps one stream for the jobs any tab watches and passes each event to the others.
 * When the leader closes or freezes, another tab takes the lock and resumes from the last id
 * every tab has seen; events are applied once per job, so nothing is lost or shown twice.
 *
 * The rule that makes a late tab exact: the leader announces the jobs of its stream (the `conn`
 * message) only once the stream's starting position is fixed, so every later event of those jobs
 * comes through it. A watch reads its job after that announcement (unless the stream is still to
 * replay the job from its start), holding the job's events meanwhile: what it read covers every
 * event up to the read, the stream every event after the position, and each event is applied
 * once (JobWatch). */
export class ProgressRelay extends Emitter {
  /** `logTail` and `contentBytes` bound each job's `state.logs` and `state.content` as the
   * relay bounds its snapshot (its `jobs.log_tail` and `jobs.content_bytes`; these defaults
   * are the relay's), so live events and a snapshot give one state. */
  constructor({ baseUrl = "", token = null, stallAfter = 45000, maxBackoff = 30000,
    shared = true, logTail = 20, contentBytes = 1048576 } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
    this.stallAfter = stallAfter;
    this.maxBackoff = maxBackoff;
    this.logTail = logTail;
    this.contentBytes = contentBytes;
    this.connection = "closed";
    this.lastEventId = null;
    this.leader = false;
    this._jobs = new Map();
    this._groups = new Map(); // parent id -> GroupWatch
    this._source = null;
    this._streamed = new Set(); // job ids in the open stream
    this._streamFrom = null; // the id the stream resumes from: where it started, then its last
    this._whole = false; // the stream started without a last id and has sent nothing yet
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

  /** Follow a group (a parent job and its children) through its own stream (the same handle
   * for the same id). */
  watchGroup(parentId) {
    let group = this._groups.get(parentId);
    if (!group) {
      group = new GroupWatch(this, parentId);
      this._groups.set(parentId, group);
    }
    return group;
  }

  // `relay.on("connection", fn)`: fn(state) on connecting/open/reconnecting/closed;
  // `relay.on("stall", fn)`: fn(true|false) when nothing (not even a heartbeat) arrived for
  // `stallAfter` ms, and when something did again; `relay.on("error", fn)`: fn({code, message})
  // when the relay refused the stream for good (401, 403).

  /** Close the stream, forget every job, and hand the stream to another tab. */
  close() {
    for (const job of this._jobs.values()) job._phase = "closed";
    this._jobs.clear();
    for (const group of [...this._groups.values()]) group.close();
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

  /** Whether this tab keeps the stream: the leader, or a tab on its own. */
  get _streaming() {
    return this.leader || !this._shared;
  }

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
    this._streamFrom = this.lastEventId;
    this._remote.clear();
    this._post({ t: "who" }); // every tab answers with the jobs it watches
    this._schedule();
  }

  _resign() {
    this.leader = false;
    this._stop();
    this._unlock?.();
  }

  _post(message) {
    if (this._shared) this._channel.postMessage(message);
  }

  _changed() {
    if (this._streaming) this._schedule();
    else {
      this._post({ t: "jobs", tab: this._tab, jobs: [...this._jobs.keys()] });
      if (this.connection === "closed") this._setConnection("connecting");
    }
  }

  /** Tell this tab's watches and (the leader) the other tabs which jobs the stream carries,
   * and whether it is still to replay them from their start. Valid whenever the stream's jobs
   * are set: `_open` fixes its starting position first. */
  _announce() {
    const jobs = [...this._streamed];
    if (this.leader) {
      this._post({ t: "conn", state: this.connection, jobs, whole: this._whole });
    }
    this._cover(jobs, this._whole);
  }

  _cover(jobs, whole) {
    for (const id of jobs) this._jobs.get(id)?._announced(whole);
  }

  _onTabMessage(message) {
    switch (message.t) {
      case "who":
        if (!this.leader) this._post({ t: "jobs", tab: this._tab, jobs: [...this._jobs.keys()] });
        break;
      case "jobs":
        if (this.leader) {
          const before = this._remote.get(message.tab) || new Set();
          // A job a tab starts to watch is followed again even if it ended: that tab reads
          // its state once the stream is announced (a stream whose every job has ended is
          // answered 204 and closes).
          for (const id of message.jobs) if (!before.has(id)) this._ended.delete(id);
          this._remote.set(message.tab, new Set(message.jobs));
          this._announce();
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
          this._cover(message.jobs, message.whole);
        }
        break;
    }
  }

  // -- the stream (leader, or a tab on its own) ------------------------------------------

  _setConnection(state) {
    const changed = this.connection !== state;
    this.connection = state;
    if (this._streaming) this._announce();
    if (changed) this._emit("connection", state);
  }

  _fetch(path, init = {}) {
    const headers = { ...(init.headers || {}) };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return fetch(this.baseUrl + path, { ...init, headers, credentials: "include" });
  }

  _unwatch(job) {
    if (this._jobs.get(job.id) !== job) return;
    job._phase = "closed";
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
   * loop however many changed in it; when they did not, announce them again (for a watch
   * that started meanwhile). A reopened stream resumes from its own position, or from where
   * the last leader's stream was when this tab took over if one of its jobs joins now. */
  _schedule() {
    if (this._scheduled) return;
    this._scheduled = true;
    setTimeout(() => {
      this._scheduled = false;
      if (!this._streaming) return;
      const wanted = this._wanted();
      if ((this._source || this._retryTimer) && wanted.length === this._streamed.size &&
          wanted.every((id) => this._streamed.has(id))) {
        this._announce();
        return;
      }
      const taken = wanted.some((id) => !this._streamed.has(id) && this._covered.has(id));
      const from = taken ? this._coveredSince : this._streamFrom ?? this.lastEventId;
      this._stop();
      // Resuming from an earlier id sends some events again; each job applies them once.
      this._open(from);
    }, 0);
  }

  /** The stream is read with fetch rather than EventSource: it sees heartbeats (for the stall
   * warning), status codes (204 ends for good; a 502/503 is retried, where EventSource would
   * give up) and can send the token as a header. */
  async _open(from) {
    const wanted = this._wanted();
    if (!wanted.length) { this._setConnection("closed"); return; }
    const params = new URLSearchParams();
    for (const id of wanted) params.append("job", id);
    const headers = { Accept: "text/event-stream" };
    if (from) headers["Last-Event-ID"] = from;
    const controller = new AbortController();
    this._source = controller;
    this._streamed = new Set(wanted);
    this._streamFrom = from;
    this._whole = !from;
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
    await readFrames(body, () => this._source === controller, () => this._alive(),
      (frame) => this._onFrame(frame, controller));
  }

  _onFrame({ id, name, data, retry }, controller) {
    if (retry !== null) this._serverRetry = retry;
    if (data === null) return;
    this._whole = false;
    if (id) this._streamFrom = id;
    let frame;
    try { frame = JSON.parse(data); } catch (error) { return; }
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
    this._jobs.get(jobId)?._receive(id, name, data);
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
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open(this._streamFrom);
    }, delay);
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
.stage:empty { display: none; }
.error { color: #b22; margin-top: 4px; overflow-wrap: anywhere; }
.content { margin-top: 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
ol { margin: 4px 0 0; padding-left: 20px; max-height: 12em; overflow: auto; font-size: 12px; }
li[data-level="warning"] { color: #a60; } li[data-level="error"] { color: #b22; }
li[data-level="success"] { color: #272; } li[data-level="debug"] { color: #889; }
/* The level as a word too, not by colour alone (it is not part of the entry's text). */
.log li::before { content: attr(data-level); display: inline-block; min-width: 5.2em;
  margin-right: 4px; font-size: 10px; font-weight: 600; text-transform: uppercase; }
button { margin-left: 8px; }
.parts ol { list-style: none; padding-left: 0; max-height: 24em; }
.part { display: grid; grid-template-columns: minmax(6em, 1fr) 5em 6em 2fr; gap: 6px;
  align-items: center; padding: 2px 0; }
.part .name { overflow-wrap: anywhere; }
.part .bar { height: 6px; margin: 0; }
.part[data-status="failed"] .fill { background: #c44; }
.part[data-status="cancelled"] .fill { background: #999; }
.part .message { color: #445; overflow-wrap: anywhere; }
`;

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

/** The elements that show each group: its stream is closed when the last of them stops
 * showing it (a JobWatch stays, as it always has). */
const groupHolders = new WeakMap(); // GroupWatch -> Set of elements

function holdGroup(group, element) {
  if (!groupHolders.has(group)) groupHolders.set(group, new Set());
  groupHolders.get(group).add(element);
}

function releaseGroup(group, element) {
  const holders = groupHolders.get(group);
  if (!holders?.delete(element) || holders.size) return;
  group.close();
}

/** The label of a group's part: its `meta.label` or `meta.name` when it has one, else its id. */
function partLabel(state) {
  const meta = state.meta;
  const label = meta && typeof meta === "object" ? meta.label ?? meta.name : null;
  return typeof label === "string" && label ? label : state.id;
}

/** A job's progress: bar with percent, stage, message and ETA; the `content` it streamed; its
 * log; its end; a cancel button. With the `group` attribute, the job is a group's parent: the
 * bar is the group's, and its parts are listed below it (expandable), each with its own small
 * bar, status and message; Cancel cancels the whole group. Everything from the job is set as
 * text, never as HTML. */
export class JobProgressElement extends (globalThis.HTMLElement || class {}) {
  static get observedAttributes() { return ["job", "group"]; }

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
      <details class="log"><summary>Log (<span class="count">0</span>)</summary><ol></ol></details>
      <details class="parts" part="parts" hidden><summary>Parts: <span class="done">0</span> of
        <span class="total">0</span> done</summary><ol></ol></details>`;
    this._$ = (selector) => root.querySelector(selector);
    this._$("button").addEventListener("click", () => this._cancel());
  }

  connectedCallback() { this._follow(); }
  disconnectedCallback() { this._unfollow(); }
  attributeChangedCallback() { if (this.isConnected) this._follow(); }

  /** The JobWatch this element shows (a GroupWatch with the `group` attribute). */
  get watch() { return this._watch || null; }

  _follow() {
    this._unfollow();
    const id = this.getAttribute("job");
    if (!id) return;
    const relay = sharedRelay(this.getAttribute("base-url") || "", this.getAttribute("token"));
    this._watch = this.hasAttribute("group") ? relay.watchGroup(id) : relay.watch(id);
    if (this._watch instanceof GroupWatch) holdGroup(this._watch, this);
    this._$(".parts ol").replaceChildren();
    this._$(".title").textContent = this.getAttribute("label") || id;
    this._off = this._watch.on("state", (state) => this._render(state));
    this._render(this._watch.state);
  }

  _unfollow() {
    this._off?.();
    this._off = null;
    if (this._watch instanceof GroupWatch) releaseGroup(this._watch, this);
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
    const finished = state.status in FINISHED_STATUS;
    // A stage is what the job is doing: none once it has ended. A failure's message is shown
    // once, as the error.
    $(".stage").textContent = finished ? "" : state.stage || "";
    $(".message").textContent = state.status === "failed" ? "" : state.message || "";
    $(".percent").textContent = percent === null ? "" : `${percent} %`;
    $(".eta").textContent = state.status === "running" ? eta(state.eta_seconds) : "";
    const content = $(".content");
    content.hidden = !state.content;
    content.textContent = state.content;
    const error = $(".error");
    error.hidden = !state.error;
    error.textContent = state.error ? state.error.message : "";
    const button = $("button");
    button.hidden = finished;
    if (state.cancel_requested) { button.disabled = true; button.textContent = "Cancelling…"; }
    const list = $(".log ol");
    // Drawn again when the entries shown are no longer the start of the log (after a reset,
    // or once the oldest has left the tail); else only the new ones are added.
    if (state.logs !== this._logs || this._first !== state.logs[0]) {
      list.replaceChildren();
      this._logs = state.logs;
      this._first = state.logs[0];
    }
    for (const entry of state.logs.slice(list.childElementCount)) {
      const item = document.createElement("li");
      item.dataset.level = entry.level || "info";
      item.textContent = entry.message;
      list.append(item);
    }
    $(".count").textContent = String(state.logs.length);
    this._renderParts(state.children);
  }

  /** A group's parts, one list item each, in the group's order (kept by job id and updated in
   * place, so an expanded list stays as the reader left it). */
  _renderParts(children) {
    const parts = this._$(".parts");
    parts.hidden = !children;
    if (!children) return;
    const list = parts.querySelector("ol");
    const items = new Map([...list.children].map((item) => [item.dataset.job, item]));
    children.forEach((child, index) => {
      let item = items.get(child.id);
      if (!item) {
        item = document.createElement("li");
        item.className = "part";
        item.setAttribute("part", "part");
        item.dataset.job = child.id;
        item.innerHTML = `<span class="name"></span><div class="bar" role="progressbar"
          aria-valuemin="0" aria-valuemax="100"><div class="fill"></div></div>
          <span class="status"></span><span class="message"></span>`;
      }
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
      const percent = child.status === "completed" ? 100
        : typeof child.percent === "number" ? Math.round(child.percent) : null;
      item.dataset.status = child.status;
      item.querySelector(".name").textContent = partLabel(child);
      const bar = item.querySelector(".bar");
      bar.setAttribute("aria-label", partLabel(child));
      if (percent === null) bar.removeAttribute("aria-valuenow");
      else bar.setAttribute("aria-valuenow", String(percent));
      item.querySelector(".fill").style.width = `${percent ?? 0}%`;
      item.querySelector(".status").textContent = child.cancel_requested &&
        child.status === "running" ? "cancelling" : child.status;
      item.querySelector(".message").textContent = child.status === "failed"
        ? child.error?.message || "" : child.message || "";
    });
    const finished = children.filter((child) => child.status in FINISHED_STATUS).length;
    this._$(".done").textContent = String(finished);
    this._$(".total").textContent = String(children.length);
  }
}

if (globalThis.customElements && !customElements.get("job-progress")) {
  customElements.define("job-progress", JobProgressElement);
}
