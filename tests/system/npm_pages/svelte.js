// The Svelte test page: one <Job> per id in ?jobs=a,b, each with a jobStore; what each job's
// component last showed is window.views[id]; window.relay is the relay the store uses.
import { sharedRelay } from "@progress-relay/client";
import { mount } from "svelte";
import Job from "./Job.svelte";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("relay") || "";
const token = params.get("token");
const jobs = (params.get("jobs") || "").split(",").filter(Boolean);
window.relay = sharedRelay(baseUrl, token);
window.views = {};
for (const id of jobs) {
  mount(Job, { target: document.getElementById("app"), props: { id, baseUrl, token } });
}
