// Server-side rendering with the React hook (run by node from a directory where the package
// and React are installed): the hook renders the job's initial state, or null without an id,
// and fetches nothing. Prints the HTML and every URL fetched.
import { useJob } from "@progress-relay/client/react";
import { createElement } from "react";
import { renderToString } from "react-dom/server";

const fetched = [];
globalThis.fetch = (url) => {
  fetched.push(String(url));
  return new Promise(() => {});
};

function Job({ id }) {
  const { state, connection } = useJob(id, { baseUrl: "http://127.0.0.1:9" });
  return createElement("p", null, `${state.id} ${state.status} ${state.percent} ${connection}`);
}

function NoJob() {
  const { state, connection } = useJob(null);
  return createElement("p", null, `${state} ${connection}`);
}

const html = renderToString(
  createElement("div", null, createElement(Job, { id: "a" }), createElement(NoJob)),
);
// Anything the render scheduled has run by then.
setTimeout(() => console.log(JSON.stringify({ html, fetched })), 50);
