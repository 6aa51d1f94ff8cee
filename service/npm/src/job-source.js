// What the React hook and the Svelte store share: one JobSource per relay and job id, which
// watches the job while anything subscribes to it and hands out its state as immutable values.
// Internal to the package (not in its exports).
import { JobWatch, ProgressRelay, sharedRelay } from "./progress-relay.js";

const CLOSED = "closed";

/** A job's state before anything is known of it: what the client starts a watch with; a
 * group's, the same with no children yet. */
function initialState(id, group) {
  const state = new JobWatch(null, id).state;
  if (!group) return state;
  const counts = { pending: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
  return { ...state, group: { counts, total: 0, failed: [], children: [] }, children: [] };
}

function freeze(state) {
  // The client changes its state object in place; a copy per change (its log list and a
  // group's children included) is what React and Svelte can compare by reference.
  const copy = { ...state, logs: Object.freeze(state.logs.slice()) };
  if (state.children) copy.children = Object.freeze(state.children.map(freeze));
  return Object.freeze(copy);
}

/** Relays made for `shared: false` (a stream of this tab's own), one per base URL and token. */
const ownRelays = new Map();

function relayOf({ relay, baseUrl = "", token = null, shared = true }) {
  if (relay) return relay;
  if (shared) return sharedRelay(baseUrl, token);
  const key = `${baseUrl} ${token || ""}`;
  if (!ownRelays.has(key)) ownRelays.set(key, new ProgressRelay({ baseUrl, token, shared: false }));
  return ownRelays.get(key);
}

/** How many JobSources use each relay's watch of a job: the watch is closed when none does.
 * (A `<job-progress>` element of the same relay and job does not count here: close nothing
 * under it, by giving the hook or store a relay of its own with the `relay` option.) */
const users = new WeakMap(); // relay -> (job id, or "group " and the parent's id -> count)

const keyOf = (id, group) => (group ? `group ${id}` : id);

function retain(relay, id, group) {
  if (!users.has(relay)) users.set(relay, new Map());
  const counts = users.get(relay);
  const key = keyOf(id, group);
  counts.set(key, (counts.get(key) || 0) + 1);
  return group ? relay.watchGroup(id) : relay.watch(id);
}

function release(relay, watch, group) {
  const counts = users.get(relay);
  const key = keyOf(watch.id, group);
  const left = counts.get(key) - 1;
  if (left > 0) {
    counts.set(key, left);
    return;
  }
  counts.delete(key);
  watch.close();
}

export class JobSource {
  /** `group`: the job is a group's parent, followed with its children (relay.watchGroup). */
  constructor(options, id, forget, group = false) {
    this.id = id;
    this.group = group;
    this._options = options;
    this._forget = forget;
    this._listeners = new Set();
    this._relay = null;
    this._watch = null;
    this._off = [];
    this._version = 0;
    this._built = -1;
    this._stopTimer = null;
    this.initial = Object.freeze({ state: freeze(initialState(id, group)), connection: CLOSED,
      cancel: () => this.cancel() });
    this._snapshot = this.initial;
    // Bound once: React compares subscribe and getSnapshot by identity.
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
    this.getServerSnapshot = () => this.initial;
  }

  /** Calls `listener()` after every change of the job's state or of the connection; returns
   * the unsubscribe. The first subscriber starts the watch (and makes the relay, so nothing
   * runs on a server that only renders); the last one's leaving ends it, a turn of the event
   * loop later, so that an unsubscribe followed at once by a subscribe (React's StrictMode, a
   * component that moves) keeps the watch and its state. */
  subscribe(listener) {
    this._listeners.add(listener);
    clearTimeout(this._stopTimer);
    this._stopTimer = null;
    if (!this._watch) this._start();
    return () => {
      if (!this._listeners.delete(listener) || this._listeners.size) return;
      this._stopTimer = setTimeout(() => this._stop(), 0);
    };
  }

  /** `{ state, connection, cancel }`: the same object until something changes. */
  getSnapshot() {
    if (this._watch && this._built !== this._version) {
      this._built = this._version;
      this._snapshot = Object.freeze({ state: freeze(this._watch.state),
        connection: (this.group ? this._watch : this._relay).connection,
        cancel: this._snapshot.cancel });
    }
    return this._snapshot;
  }

  /** Ask the job's worker to cancel it (see JobWatch.cancel). */
  cancel() {
    if (!this._watch) return Promise.reject(new Error(`job ${this.id} is not being watched`));
    return this._watch.cancel();
  }

  _start() {
    this._relay = relayOf(this._options);
    this._watch = retain(this._relay, this.id, this.group);
    const changed = () => {
      this._version += 1;
      for (const listener of [...this._listeners]) listener();
    };
    // A group has a stream of its own, and so its own connection.
    const connection = this.group ? this._watch : this._relay;
    this._off = [this._watch.on("state", changed), connection.on("connection", changed)];
    changed(); // the watch may already hold a state (another component, another tab's stream)
  }

  _stop() {
    this._stopTimer = null;
    if (this._listeners.size) return;
    for (const off of this._off) off();
    this._off = [];
    release(this._relay, this._watch, this.group);
    this._watch = null;
    this._snapshot = this.initial;
    this._forget(this);
  }
}

const byRelay = new WeakMap(); // a relay given in the options -> (job id -> JobSource)
const byKey = new Map(); // "shared base-url token" -> (job id -> JobSource)

/** The JobSource of this job under these options: the same one for every caller, so that a
 * job shown by several components is watched once. `group`: the job as a group's parent, with
 * its children. */
export function jobSource(id, options = {}, group = false) {
  let sources;
  if (options.relay) {
    sources = byRelay.get(options.relay);
    if (!sources) byRelay.set(options.relay, (sources = new Map()));
  } else {
    const key = `${options.shared !== false} ${options.baseUrl || ""} ${options.token || ""}`;
    sources = byKey.get(key);
    if (!sources) byKey.set(key, (sources = new Map()));
  }
  const key = keyOf(id, group);
  let source = sources.get(key);
  if (!source) {
    source = new JobSource(options, id, (gone) => {
      if (sources.get(key) === gone) sources.delete(key);
    }, group);
    sources.set(key, source);
  }
  return source;
}
