// The React test page: one <Job> per id in ?jobs=a,b (settings.js), each with useJob, and one
// <Group> per id in ?groups=g, with useJobGroup, in StrictMode (its double mount is the case
// the hook must survive). window.setJobs(ids) shows other jobs (unmounting the others).
import { useJob, useJobGroup } from "@progress-relay/client/react";
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { baseUrl, groups, jobs, token } from "./settings.js";

function Job({ id }) {
  const view = useJob(id, { baseUrl, token });
  const { state, connection } = view;
  useEffect(() => {
    window.views[id] = view;
  }, [id, view]);
  return (
    <section data-job={id} data-status={state.status} data-connection={connection}>
      <progress max="100" value={state.percent ?? 0} />
      <span className="stage">{state.stage}</span> <span className="message">{state.message}</span>
      <ol className="logs">
        {state.logs.map((entry) => (
          <li key={entry.id} data-level={entry.level}>
            {entry.message}
          </li>
        ))}
      </ol>
      <pre className="content">{state.content}</pre>
      {state.error && <p className="error">{state.error.message}</p>}
    </section>
  );
}

function Group({ id }) {
  const view = useJobGroup(id, { baseUrl, token });
  const { state, connection } = view;
  useEffect(() => {
    window.groupViews[id] = view;
  }, [id, view]);
  return (
    <section data-group={id} data-status={state.status} data-connection={connection}>
      <progress max="100" value={state.percent ?? 0} />
      <ol className="parts">
        {state.children.map((child) => (
          <li key={child.id} data-job={child.id} data-status={child.status}>
            <progress max="100" value={child.percent ?? 0} /> {child.message}
          </li>
        ))}
      </ol>
      <button type="button" onClick={() => view.cancel()}>Cancel</button>
    </section>
  );
}

function Jobs() {
  const [shown, setShown] = useState(jobs);
  window.setJobs = setShown;
  return [
    ...shown.map((id) => <Job key={id} id={id} />),
    ...groups.map((id) => <Group key={`group ${id}`} id={id} />),
  ];
}

createRoot(document.getElementById("app")).render(
  <StrictMode>
    <Jobs />
  </StrictMode>,
);
