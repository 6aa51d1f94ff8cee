// The Svelte test page: one <Job> per id in ?jobs=a,b (settings.js), each with a jobStore, and
// one <Group> per id in ?groups=g, with a jobGroupStore. window.setJobs(ids) shows other jobs
// (unmounting the others).
import { mount, unmount } from "svelte";
import Group from "./Group.svelte";
import Job from "./Job.svelte";
import { baseUrl, groups, jobs, token } from "./settings.js";
let mounted = [];
window.setJobs = (ids) => {
  for (const component of mounted) unmount(component);
  const target = document.getElementById("app");
  mounted = ids.map((id) => mount(Job, { target, props: { id, baseUrl, token } }));
};
window.setJobs(jobs);
for (const id of groups) {
  mount(Group, { target: document.getElementById("app"), props: { id, baseUrl, token } });
}
