import type { GroupState, JobOptions, JobView } from "./index.js";

export type { JobOptions, JobView } from "./index.js";

/** A readable store by Svelte's store contract (`$job` in a component). */
export interface JobStore {
  subscribe(this: void, run: (value: JobView) => void, invalidate?: () => void): () => void;
  /** Ask the worker to cancel the job (rejects while nothing subscribes). */
  cancel(): Promise<void>;
}

/** A store of one job; the job is watched while the store has subscribers. */
export function jobStore(id: string, options?: JobOptions): JobStore;

/** A readable store of a group: `$group.state` is the parent's state with `children`. */
export interface JobGroupStore {
  subscribe(
    this: void,
    run: (value: JobView<Readonly<GroupState>>) => void,
    invalidate?: () => void,
  ): () => void;
  /** Cancel the group (rejects while nothing subscribes). */
  cancel(): Promise<void>;
}

/** A store of a group; the group is followed, on its own stream, while the store has
 * subscribers. */
export function jobGroupStore(id: string, options?: JobOptions): JobGroupStore;
