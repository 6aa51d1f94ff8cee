// @progress-relay/client/svelte: jobStore(id, options), a readable store by Svelte's store
// contract (subscribe(run) calls run at once and after every change, and returns the
// unsubscribe), so `$job` works in components without this module importing svelte.
import { jobSource } from "./job-source.js";

/** A store of `{ state, connection, cancel }` for one job; the job is watched while the store
 * has subscribers. */
export function jobStore(id, options = {}) {
  return {
    subscribe(run) {
      const source = jobSource(id, options);
      const unsubscribe = source.subscribe(() => run(source.getSnapshot()));
      run(source.getSnapshot());
      return unsubscribe;
    },
    cancel: () => jobSource(id, options).cancel(),
  };
}
