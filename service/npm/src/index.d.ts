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
  on<K extends keyof RelayEvents>(name: K, listener: (value: RelayEvents[K]) => void): () => void;
  /** Close the stream, forget every job, hand the stream to another tab. */
  close(): void;
}

/** The page's relay for these settings, shared by every `<job-progress>` (and hook and store)
 * that uses them. */
export function sharedRelay(baseUrl?: string, token?: string | null): ProgressRelay;

/** `<job-progress job="…" base-url="…" token="…" label="…">`. */
export class JobProgressElement extends HTMLElement {
  /** The JobWatch it shows; null before it has a `job`. */
  readonly watch: JobWatch | null;
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
