// @progress-relay/client/react: useJob(id, options) -> { state, connection, cancel }, and
// useJobGroup(id, options), the same for a group's parent with its children.
import { useMemo, useSyncExternalStore } from "react";
import { jobSource } from "./job-source.js";

const IDLE = Object.freeze({ state: null, connection: "closed",
  cancel: () => Promise.reject(new Error("no job to cancel")) });
const idle = () => IDLE;
const subscribeToNothing = () => () => {};

/** The job's state and the connection's, kept current while the component is mounted. With a
 * null or empty id nothing is watched and `state` is null (a page that has no job yet). On a
 * server (and while hydrating) it is the job's initial state, without any connection. */
export function useJob(id, options = {}) {
  return useSource(id, options, false);
}

/** A group's state (its parent's, with `children`: each child's state in the group's order),
 * followed through the group's own stream; otherwise as useJob. */
export function useJobGroup(id, options = {}) {
  return useSource(id, options, true);
}

function useSource(id, options, group) {
  const { relay, baseUrl = "", token = null, shared = true } = options;
  const source = useMemo(
    () => (id ? jobSource(id, { relay, baseUrl, token, shared }, group) : null),
    [id, relay, baseUrl, token, shared, group]);
  return useSyncExternalStore(source ? source.subscribe : subscribeToNothing,
    source ? source.getSnapshot : idle, source ? source.getServerSnapshot : idle);
}
