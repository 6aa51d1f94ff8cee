// Typed usage of @progress-relay/client, checked by `npm run typecheck` (tsc --noEmit) after
// `npm run build`: the package is imported by its name, so its exports map and dist/*.d.ts are
// what is checked. Each `@ts-expect-error` is a misuse the types must reject.
import {
  type ConnectionState,
  type GroupState,
  GroupWatch,
  type JobState,
  type JobView,
  JobProgressElement,
  JobWatch,
  ProgressRelay,
  sharedRelay,
} from "@progress-relay/client";
import { JobProgressElement as Element } from "@progress-relay/client/element";
import { useJob, useJobGroup } from "@progress-relay/client/react";
import {
  type JobGroupStore,
  type JobStore,
  jobGroupStore,
  jobStore,
} from "@progress-relay/client/svelte";
import type { Readable } from "svelte/store";

const relay = new ProgressRelay({
  baseUrl: "https://relay.example.com",
  token: "t",
  shared: false,
  logTail: 50,
  contentBytes: 65536,
});
const bounds: number = relay.logTail + relay.contentBytes;
const job: JobWatch = relay.watch("report-42");
job.on("progress", (data, watched) => {
  const percent: number | undefined = data.percent;
  const state: JobState = watched.state;
  console.log(percent, state.stage?.toUpperCase(), data.tool);
  // @ts-expect-error percent may be absent from a progress event
  data.percent.toFixed(0);
});
job.on("log", (data) => data.message.trim());
job.on("failed", (data) => data.code?.trim());
job.on("reset", (snapshot) => snapshot.subscribers + snapshot.logs.length);
job.on("reset", (snapshot) => {
  // @ts-expect-error a snapshot may come without its text (as the job list's entries do)
  snapshot.content.length;
});
job.on("state", (state) => {
  if (state.status === "failed") console.log(state.error?.message, state.error?.details);
  const truncated: boolean = state.content_truncated;
  // @ts-expect-error no such status
  if (state.status === "error") console.log(state);
  for (const entry of state.logs) console.log(entry.level, entry.message, entry.at);
});
job.on("my_event", (data: unknown) => data);
// @ts-expect-error a log's message is a string
job.on("log", (data) => data.message.toFixed(0));
const off: () => void = relay.on("connection", (state: ConnectionState) => state);
relay.on("stall", (stalled: boolean) => stalled);
// @ts-expect-error a stall listener gets a boolean
relay.on("stall", (stalled: string) => stalled);
off();
void job.cancel().then(() => job.close());
// @ts-expect-error watches are made by relay.watch
new JobWatch(relay, "x");
// @ts-expect-error the option is baseUrl
new ProgressRelay({ base_url: "x" });

const shared: ProgressRelay = sharedRelay("", null);
const element = document.createElement("job-progress");
const typed: JobProgressElement = element;
const same: Element = typed;
console.log(element.watch?.state.percent, same.watch?.finished, shared.leader, bounds);

function Bar(props: { id: string }): string {
  const { state, connection, cancel } = useJob(props.id, { baseUrl: "https://relay.example.com" });
  void cancel;
  return `${state.percent ?? 0} % ${state.status} (${connection})`;
}
function Maybe(props: { id: string | null }): string {
  const { state } = useJob(props.id, { relay: shared });
  // @ts-expect-error no id: no state
  state.percent;
  return state ? state.content : "no job yet";
}
function Frozen(props: { id: string }): void {
  const { state } = useJob(props.id);
  // @ts-expect-error the state a hook hands out is read-only
  state.percent = 3;
}
// @ts-expect-error the hook takes a job id
useJob(42);

const store: JobStore = jobStore("report-42", { token: "t", shared: false });
const readable: Readable<JobView> = store;
const stop = readable.subscribe((view) => console.log(view.state.status, view.connection));
stop();
void store.cancel();

const group: GroupWatch = relay.watchGroup("batch-7");
group.on("state", (state: GroupState) => {
  const done: number = state.group.counts.completed;
  for (const child of state.children) console.log(child.id, child.status, child.percent, done);
  // @ts-expect-error a child's state is a job's, not a group's
  state.children[0]?.children;
});
group.on("child", (child) => child.status.toUpperCase());
group.on("connection", (state: ConnectionState) => state);
group.child("part-1")?.on("progress", (data) => data.percent);
void group.cancel().then(() => group.close());
// @ts-expect-error group watches are made by relay.watchGroup
new GroupWatch(relay, "x");

function Batch(props: { id: string }): string {
  const { state, connection } = useJobGroup(props.id, { baseUrl: "https://relay.example.com" });
  // @ts-expect-error the state a hook hands out is read-only
  state.children = [];
  return `${state.group.total} parts, ${state.children.length} shown (${connection})`;
}
const groupStore: JobGroupStore = jobGroupStore("batch-7", { shared: false });
const groups: Readable<JobView<Readonly<GroupState>>> = groupStore;
groups.subscribe((view) => console.log(view.state.children.map((child) => child.percent)))();
void groupStore.cancel();

export { Bar, Batch, Frozen, Maybe };
