// Types of @progress-relay/client (hand-written; the client is plain JavaScript, see
// dist/progress-relay.js). Checked by `npm run typecheck` over test/usage.ts.

export type JobStatus = "pending" | "running" | "completed" | "failed" | "cancelled";
export type LogLevel = "debug" | "info" | "success" | "warning" | "error";
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface LogEntry {
  /** The log event's id. */
  id: string;
  /** ISO 8601: when the relay logged it (from a snapshot) or this page applied it. */
  at: string;
  level: LogLevel;
  message: string;
}

export interface JobError {
  message: string;
  code: string | null;
  /** The `failed` event's `details`; null when it had none. */
  details: unknown;
}

/** A job as the client keeps it, from its events and from `reset` (the relay's snapshot). */
export interface JobState {
  id: string;
  status: JobStatus;
  percent: number | null;
  stage: string | null;
  message: string | null;
  step: number | null;
  total_steps: number | null;
  /** The relay's estimate, carried by every `progress`; null after the end. */
  eta_seconds: number | null;
  result: unknown;
  redirect_url: string | null;
  error: JobError | null;
  cancel_requested: boolean;
  /** The last `logTail` (20) entries, as the relay's snapshot keeps them. */
  logs: LogEntry[];
  /** The `content` texts joined: streamed output such as an LLM's answer; its newest
   * `contentBytes` (1 MiB) bytes, as the relay's snapshot keeps it. */
  content: string;
  /** True when the beginning of `content` was dropped (here or by the relay). */
  content_truncated: boolean;
  last_event_id: string | null;
  // Set once a `reset` (the snapshot) was applied:
  created_at?: string;
  updated_at?: string;
  subscribers?: number;
  meta?: unknown;
  /** The group's parent, for a child; null for a job that is not one. */
  parent?: string | null;
  /** A parent's aggregate of its children (absent on a job that has none). */
  group?: GroupSummary;
}

/** How many children of a group are in each status. */
export interface GroupCounts {
  pending: number;
  running: number;
  completed: number;
  failed: number;
  cancelled: number;
}

/** A parent's `group`: its children's ids in creation order, their counts by status, how
 * many there are and which failed. */
export interface GroupSummary {
  children: string[];
  counts: GroupCounts;
  total: number;
  failed: string[];
}

/** A group as the client keeps it: the parent's state (its `percent` and `eta_seconds` the
 * relay's aggregate) with each child's state, in the group's order. */
export interface GroupState extends JobState {
  group: GroupSummary;
  children: readonly JobState[];
}

/** The relay's snapshot of a job (`GET /v1/jobs/{id}`, the data of `reset`). */
export interface Snapshot extends Omit<JobState, "content" | "content_truncated"> {
  created_at: string;
  updated_at: string;
  subscribers: number;
  meta: unknown;
  /** The streamed text and whether its beginning was dropped (not in the job list's entries). */
  content?: string;
  content_truncated?: boolean;
}

export interface ProgressData {
  percent?: number;
  stage?: string;
  message?: string;
  step?: number;
  total_steps?: number;
  eta_seconds?: number | null;
  [field: string]: unknown;
}
export interface LogData {
  message: string;
  level?: LogLevel;
  [field: string]: unknown;
}
export interface ContentData {
  text: string;
  [field: string]: unknown;
}
export interface CompleteData {
  result?: unknown;
  message?: string;
  redirect_url?: string;
  [field: string]: unknown;
}
export interface FailedData {
  message: string;
  code?: string;
  details?: unknown;
  [field: string]: unknown;
}
export interface CancelledData {
  message?: string;
  [field: string]: unknown;
}

/** What a JobWatch's listeners get, by event name. */
export interface JobEvents {
  progress: ProgressData;
  log: LogData;
  content: ContentData;
  complete: CompleteData;
  failed: FailedData;
  cancelled: CancelledData;
  reset: Snapshot;
  cancel_requested: Record<string, unknown>;
  /** After every change, with the new state. */
  state: JobState;
}

/** What a GroupWatch's listeners get, by name: the parent's events, and */
export interface GroupEvents extends Omit<JobEvents, "state"> {
  /** After every change, with the group's new state. */
  state: GroupState;
  /** After a child's event, with that child's state. */
  child: JobState;
  /** The group's own stream. */
  connection: ConnectionState;
  /** The relay refused the group's stream for good (401, 403, 404). */
  error: { code: string; message?: string };
}

/** What a ProgressRelay's listeners get, by name. */
export interface RelayEvents {
  connection: ConnectionState;
  /** true when nothing (not even a heartbeat) arrived for `stallAfter` ms, false once it does. */
  stall: boolean;
  /** The relay refused the stream for good (401, 403, 404). */
  error: { code: string; message?: string };
}

/** One watched job; `relay.watch(id)` makes it (the same handle for the same id). */
export class JobWatch {
  private constructor();
  readonly relay: ProgressRelay;
  readonly id: string;
  /** Changed in place by every event, replaced by a `reset`. */
  readonly state: JobState;
  readonly finished: boolean;
  /** Returns the function that removes the listener. */
  on<K extends keyof JobEvents>(name: K, listener: (data: JobEvents[K], job: JobWatch) => void): () => void;
  /** An event name of the publisher's own (forwarded as is). */
  on(name: string, listener: (data: unknown, job: JobWatch) => void): () => void;
  /** Ask the worker to cancel the job; it ends as `cancelled` when the worker says so. */
  cancel(): Promise<void>;
  /** Stop watching this job. */
  close(): void;
}

/** One watched group (a parent job and its children), followed through the parent's stream
 * with its children's events; `relay.watchGroup(id)` makes it (the same handle for the same id). */
export class GroupWatch {
  private constructor();
  readonly relay: ProgressRelay;
  readonly id: string;
  /** The parent job's own watch (its events, its state without `children`). */
  readonly parent: JobWatch;
  /** A new object after every change. */
  readonly state: GroupState;
  readonly finished: boolean;
  /** The group's stream: it is this tab's own. */
  readonly connection: ConnectionState;
  /** The watch of one child; null for an id not seen in the group. */
  child(id: string): JobWatch | null;
  on<K extends keyof GroupEvents>(name: K, listener: (data: GroupEvents[K], group: GroupWatch) => void): () => void;
  /** An event name of the parent's publisher's own (forwarded as is). */
  on(name: string, listener: (data: unknown, group: GroupWatch) => void): () => void;
  /** Cancel the group: the parent and every unfinished child. */
  cancel(): Promise<void>;
  /** Stop following the group (closes its stream). */
  close(): void;
}

export interface ProgressRelayOptions {
  /** The relay's URL as the browser reaches it; "" for this page's origin. */
  baseUrl?: string;
  /** A subscriber token (sent as `Authorization: Bearer`). */
  token?: string | null;
  /** ms without anything, not even a heartbeat, before `stall`; default 45000. */
  stallAfter?: number;
  /** The longest pause between reconnects, ms; default 30000. */
  maxBackoff?: number;
  /** Share one stream with the other tabs of this origin (default true, where the browser can). */
  shared?: boolean;
  /** Log entries a job's state keeps, the newest; default 20 (the relay's `jobs.log_tail`). */
  logTail?: number;
  /** Bytes (UTF-8) of streamed text a job's state keeps, the newest; default 1048576 (the
   * relay's `jobs.content_bytes`). */
  contentBytes?: number;
}

/** A connection to one relay, shared by every job this page watches and by the origin's tabs. */
export class ProgressRelay {
  constructor(options?: ProgressRelayOptions);
  readonly baseUrl: string;
  readonly token: string | null;
  readonly connection: ConnectionState;
  readonly lastEventId: string | null;
  /** Whether this tab holds the stream for the others. */
  readonly leader: boolean;
  readonly logTail: number;
  readonly contentBytes: number;
  watch(jobId: string): JobWatch;
  /** Follow a group: the parent `parentId` and its children, on one stream of its own. */
  watchGroup(parentId: string): GroupWatch;
  on<K extends keyof RelayEvents>(name: K, listener: (value: RelayEvents[K]) => void): () => void;
  /** Close the stream, forget every job, hand the stream to another tab. */
  close(): void;
}

/** The page's relay for these settings, shared by every `<job-progress>` (and hook and store)
 * that uses them. */
export function sharedRelay(baseUrl?: string, token?: string | null): ProgressRelay;

/** `<job-progress job="…" base-url="…" token="…" label="…" group>`. */
export class JobProgressElement extends HTMLElement {
  /** The JobWatch it shows (a GroupWatch with the `group` attribute); null before it has a
   * `job`. */
  readonly watch: JobWatch | GroupWatch | null;
}

declare global {
  interface HTMLElementTagNameMap {
    "job-progress": JobProgressElement;
  }
}

// -- for the React hook and the Svelte store ----------------------------------------------

/** Which relay a hook or store watches the job on. */
export interface JobOptions {
  /** A relay of your own (also for a relay whose `jobs.log_tail` or `jobs.content_bytes` are
   * not the defaults: `new ProgressRelay({ baseUrl, logTail, contentBytes })`); otherwise
   * `sharedRelay(baseUrl, token)`, or with `shared: false` one relay per base URL and token
   * that keeps a stream of this tab's own. */
  relay?: ProgressRelay;
  baseUrl?: string;
  token?: string | null;
  shared?: boolean;
}

/** What `useJob` returns and a job store holds: a new, frozen object after every change. */
export interface JobView<S = Readonly<JobState>> {
  readonly state: S;
  readonly connection: ConnectionState;
  /** Ask the worker to cancel the job (rejects while the job is not watched). */
  cancel(): Promise<void>;
}
