// The Svelte test page: one <Job> per id in ?jobs=a,b, each with a jobStore; what each job's
// component last showed is window.views[id]; window.relay is the relay the store uses;
// window.setJobs(ids) shows other jobs (unmounting the others).
import { sharedRelay } from "@progress-relay/client";
import { mount, unmount } from "svelte";
import Job from "./Job.svelte";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("relay") || "";
const token = params.get("token");
const jobs = (params.get("jobs") || "").split(",").filter(Boolean);
window.relay = sharedRelay(baseUrl, token);
window.views = {};
let mounted = [];
window.setJobs = (ids) => {
  for (const component of mounted) unmount(component);
  const target = document.getElementById("app");
  mounted = ids.map((id) => mount(Job, { target, props: { id, baseUrl, token } }));
};
window.setJobs(jobs);
