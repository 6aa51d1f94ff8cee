// The React test page: one <Job> per id in ?jobs=a,b (settings.js), each with useJob, in
// StrictMode (its double mount is the case the hook must survive). window.setJobs(ids) shows
// other jobs (unmounting the others).
import { useJob } from "@progress-relay/client/react";
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { baseUrl, jobs, token } from "./settings.js";

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

function Jobs() {
  const [shown, setShown] = useState(jobs);
  window.setJobs = setShown;
  return shown.map((id) => <Job key={id} id={id} />);
}

createRoot(document.getElementById("app")).render(
  <StrictMode>
    <Jobs />
  </StrictMode>,
);
