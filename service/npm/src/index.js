// @progress-relay/client: the browser client of progress-relay. Its one source is the module
// the relay serves at /static/progress-relay.js (service/progress_relay/static/), which the
// build copies to dist/progress-relay.js; this entry re-exports it. Importing it in a browser
// also defines <job-progress>, as importing the served module does.
export * from "./progress-relay.js";
