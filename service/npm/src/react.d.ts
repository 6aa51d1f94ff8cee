import type { GroupState, JobOptions, JobState, JobView } from "./index.js";

export type { JobOptions, JobView } from "./index.js";

/** The job's state and the connection's, current while the component is mounted (React 18+,
 * useSyncExternalStore). With no id, nothing is watched and `state` is null. */
export function useJob(id: string, options?: JobOptions): JobView;
export function useJob(
  id: string | null | undefined,
  options?: JobOptions,
): JobView<Readonly<JobState> | null>;

/** A group's state (the parent's with `children`, each child's state in the group's order) and
 * its stream's connection, current while the component is mounted. */
export function useJobGroup(id: string, options?: JobOptions): JobView<Readonly<GroupState>>;
export function useJobGroup(
  id: string | null | undefined,
  options?: JobOptions,
): JobView<Readonly<GroupState> | null>;
