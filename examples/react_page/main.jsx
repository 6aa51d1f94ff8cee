// The chat page of the FastAPI example (examples/fastapi_app): each question gets a bubble
// that shows its job's steps, logs and streamed answer with useJob from @progress-relay/client.
// Built into dist/app.js with esbuild by `make npm` (service/npm: npm run example).
import { useJob } from "@progress-relay/client/react";
import { Fragment, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";

const relayUrl = document.querySelector('meta[name="progress-relay"]').content;
// A log's level as a symbol too, not by colour alone.
const ICONS = { success: "✓", error: "✕", warning: "⚠", info: "•", debug: "·" };

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

/** The assistant's bubble for one question. Seed 001's order: the page made the job's id (and
 * had the backend create the job, for its token), this component opens the job's stream
 * (useJob), and once it is open the question is submitted with that id. (The relay would
 * replay events published before the stream opened anyway; so the page shows the first step
 * as it happens.) */
function Answer({ jobId, token, question }) {
  const { state, connection, cancel } = useJob(jobId, { baseUrl: relayUrl, token });
  const [reply, setReply] = useState(null);
  const asked = useRef(false);
  useEffect(() => {
    if (connection !== "open" || asked.current) return;
    asked.current = true;
    post("api/ask", { question, job_id: jobId })
      .catch((error) => ({ status: "error", detail: error.message }))
      .then(setReply);
  }, [connection, jobId, question]);

  const running = state.status === "pending" || state.status === "running";
  return (
    <div className="bubble assistant" data-job={jobId} data-status={state.status}>
      {running && (
        <>
          <div className="step">
            {state.step ? `Step ${state.step}/${state.total_steps}: ` : "Starting… "}
            {state.message}
          </div>
          <progress max="100" value={state.percent ?? 0} />
        </>
      )}
      <ul className="logs">
        {state.logs.map((entry) => (
          <li key={entry.id} className={entry.level}>
            <span className="icon" aria-label={entry.level}>
              {ICONS[entry.level] ?? "•"}
            </span>
            {entry.message}
          </li>
        ))}
      </ul>
      {state.content && <p className="answer">{state.content}</p>}
      {state.status === "failed" && <p className="error">{state.error?.message}</p>}
      {state.status === "cancelled" && <p className="cancelled">Cancelled</p>}
      {reply?.status === "completed" && <p className="sources">{reply.sources} sources</p>}
      {reply?.status === "error" && <p className="error">Could not ask: {reply.detail}</p>}
      {running && (
        <button type="button" onClick={() => cancel().catch(() => {})} disabled={state.cancel_requested}>
          {state.cancel_requested ? "Cancelling…" : "Cancel"}
        </button>
      )}
    </div>
  );
}

function Chat() {
  const [turns, setTurns] = useState([]);
  const [text, setText] = useState("");
  const [error, setError] = useState(null);

  async function ask(event) {
    event.preventDefault();
    const question = text.trim();
    if (!question) return;
    // The job's id is made here, before anything is sent (crypto.randomUUID: a secure
    // context, which http://127.0.0.1 and http://localhost are).
    const jobId = crypto.randomUUID();
    try {
      const { subscribe_token: token } = await post("api/jobs", { question, job_id: jobId });
      setTurns((previous) => [...previous, { question, jobId, token }]);
      setText("");
      setError(null);
    } catch (failure) {
      setError(`Could not ask: ${failure.message}`);
    }
  }

  return (
    <main>
      <h1>Ask the analyst</h1>
      <div className="chat">
        {turns.map(({ question, jobId, token }) => (
          <Fragment key={jobId}>
            <div className="bubble user">{question}</div>
            <Answer jobId={jobId} token={token} question={question} />
          </Fragment>
        ))}
      </div>
      {error && <p className="error">{error}</p>}
      <form onSubmit={ask}>
        <input
          name="question"
          value={text}
          onChange={(event) => setText(event.target.value)}
          placeholder="Which holdings gained most last quarter?"
        />
        <button type="submit">Ask</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<Chat />);
