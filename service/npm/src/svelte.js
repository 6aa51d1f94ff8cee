// @progress-relay/client/svelte: jobStore(id, options), a readable store by Svelte's store
// contract (subscribe(run) calls run at once and after every change, and returns the
// unsubscribe), so `$job` works in components without this module importing svelte.
import { jobSource } from "./job-source.js";

/** A store of `{ state, connection, cancel }` for one job; the job is watched while the store
 * has subscribers. */
export function jobStore(id, options = {}) {
  return store(id, options, false);
}

/** A store of a group: its parent's state with `children` (each child's state, in the group's
 * order), followed through the group's own stream while the store has subscribers. */
export function jobGroupStore(id, options = {}) {
  return store(id, options, true);
}

function store(id, options, group) {
  return {
    subscribe(run) {
      const source = jobSource(id, options, group);
      const unsubscribe = source.subscribe(() => run(source.getSnapshot()));
      run(source.getSnapshot());
      return unsubscribe;
    },
    cancel: () => jobSource(id, options, group).cancel(),
  };
}
