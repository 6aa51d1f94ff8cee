import type { JobOptions, JobView } from "./index.js";

export type { JobOptions, JobView } from "./index.js";

/** A readable store by Svelte's store contract (`$job` in a component). */
export interface JobStore {
  subscribe(this: void, run: (value: JobView) => void, invalidate?: () => void): () => void;
  /** Ask the worker to cancel the job (rejects while nothing subscribes). */
  cancel(): Promise<void>;
}

/** A store of one job; the job is watched while the store has subscribers. */
export function jobStore(id: string, options?: JobOptions): JobStore;
