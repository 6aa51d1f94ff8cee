// What both test pages take from their URL (?relay=URL&token=T&jobs=a,b), and what they show
// the test: window.relay, the relay the hook or store uses (sharedRelay of these settings), and
// window.views, what each job's component last showed.
import { sharedRelay } from "@progress-relay/client";

const params = new URLSearchParams(location.search);
export const baseUrl = params.get("relay") || "";
export const token = params.get("token");
export const jobs = (params.get("jobs") || "").split(",").filter(Boolean);
window.relay = sharedRelay(baseUrl, token);
window.views = {};
