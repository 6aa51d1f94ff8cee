// What both test pages take from their URL (?relay=URL&token=T&jobs=a,b&groups=g), and what
// they show the test: window.relay, the relay the hook or store uses (sharedRelay of these
// settings), window.views, what each job's component last showed, and window.groupViews, what
// each group's did.
import { sharedRelay } from "@progress-relay/client";

const params = new URLSearchParams(location.search);
export const baseUrl = params.get("relay") || "";
export const token = params.get("token");
export const jobs = (params.get("jobs") || "").split(",").filter(Boolean);
export const groups = (params.get("groups") || "").split(",").filter(Boolean);
window.relay = sharedRelay(baseUrl, token);
window.views = {};
window.groupViews = {};
