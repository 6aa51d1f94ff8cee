"""``progress-relay watch JOB``: follow a job in the terminal until it ends.

The ETA shown is the relay's (the ``eta_seconds`` of each progress event, as in the snapshot);
the CLI estimates nothing itself, and shows no ETA once the job has ended. A `reset` (history out
of the relay's reach) prints the log lines and the streamed text not shown yet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any, TextIO

from progress_relay.cli.remote import EXIT_NOT_FOUND, fail, guarded, relay_for
from progress_relay.client import Event, JobNotFound, JobState

EXIT_BY_STATUS = {"completed": 0, "failed": 1, "cancelled": 2}
BAR_WIDTH = 24

DESCRIPTION = """\
Follow a job live until it ends. On a terminal the last line is a progress bar (stage, percent,
the relay's ETA, message) redrawn in place, with log lines scrolling above it; piped, every
change is a plain line.

A job that has no event yet is waited for, as its stream waits (up to jobs.pending_ttl).
A group (a parent with children) is drawn as one bar, the parent's, with a line for each part
as it starts and ends.

Exit status: 0 completed, 1 failed, 2 cancelled, 3 the relay is unreachable, 4 no such job
(never published within the wait, or deleted or expired)."""


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    watch = commands.add_parser(
        "watch",
        parents=[common],
        help="follow a job live: progress bar, logs, exit status by its end",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("job", metavar="JOB", help="the job's id")
    watch.set_defaults(run=run_watch)


@guarded
def run_watch(args: argparse.Namespace) -> int:
    view = WatchView(sys.stdout, tty=sys.stdout.isatty(), job=args.job)
    try:
        with relay_for(args) as relay:
            # A job without an event yet is waited for by its stream, which says `failed` with
            # code job_not_found when the job was never published within jobs.pending_ttl.
            parts = _parts(relay, args.job)
            view.state.children = {part: JobState(part) for part in parts}
            for event in relay.subscribe(args.job, children=bool(parts)):
                if _never_published(event):
                    missing = event.data.get("message") or f"no job {args.job}"
                    break
                view.apply(event)
            else:
                missing = None
                if view.status not in EXIT_BY_STATUS:
                    # The stream ended without a terminal event (204): the job is gone.
                    view.show_snapshot(relay.snapshot(args.job), logs=False)
    except KeyboardInterrupt:
        return 130
    finally:
        view.close()  # the cursor leaves the bar's line before any message on stderr
    if missing is not None:
        return fail(f"job not found: {missing}", EXIT_NOT_FOUND)
    if view.status not in EXIT_BY_STATUS:
        return fail(f"job {args.job} ended without a terminal event", EXIT_NOT_FOUND)
    return EXIT_BY_STATUS[view.status]


def _parts(relay: Any, job_id: str) -> list[str]:
    """A group's children (none for another job, or one not created yet)."""
    try:
        snapshot = relay.snapshot(job_id)
    except JobNotFound:
        return []
    group = snapshot.get("group")
    return [str(child) for child in group.get("children", ())] if isinstance(group, dict) else []


def _never_published(event: Event) -> bool:
    return (
        event.event == "failed"
        and isinstance(event.data, dict)
        and event.data.get("code") == "job_not_found"
    )


class WatchView:
    """Draws a job as its events come; its state is a JobState (the relay's snapshot rule), so
    a `reset` (history out of reach) redraws from the snapshot and its text continues."""

    def __init__(self, out: TextIO, *, tty: bool, job: str = "") -> None:
        self.out = out
        self.tty = tty
        self.state = JobState(job)
        self._content = ""  # the text after the last line break, not printed yet
        self._bar_drawn = False

    @property
    def status(self) -> str:
        return self.state.status

    # -- state ----------------------------------------------------------------------------

    def show_snapshot(self, snapshot: dict[str, Any], *, logs: bool) -> None:
        """Take the snapshot's state; ``logs``: print its log tail and the text not shown yet."""
        before = self.state
        state = self.state = JobState(before.job or str(snapshot.get("id", "")))
        state.children = before.children  # a group's parts as drawn so far
        state.load(snapshot)
        if logs:
            shown = {line.id for line in before.logs}
            for line in state.logs:
                if line.id not in shown:
                    self._line(f"{line.level:>7}  {line.message}")
            self._continue_text(before.content, state.content, state.content_truncated)
        if state.finished:
            self._flush_content()
        self._progress_changed()
        if state.finished:
            self._ended(snapshot)

    def apply(self, event: Event) -> None:
        if event.job != self.state.job and event.job in self.state.children:
            self._part(event)
            return
        if event.event == "reset":
            self.show_snapshot(event.data if isinstance(event.data, dict) else {}, logs=True)
            return
        self.state.apply(event)
        data = event.data if isinstance(event.data, dict) else {}
        if event.event == "progress":
            self._progress_changed()
        elif event.event == "log":
            self._line(f"{data.get('level', 'info'):>7}  {data.get('message', '')}")
        elif event.event == "content":
            self._content_text(str(data.get("text", "")))
        elif event.event == "cancel_requested":
            self._line("         cancel requested")
        elif event.terminal:
            self._flush_content()
            self._ended(
                {
                    "status": self.state.status,
                    "message": data.get("message"),
                    "result": data.get("result"),
                    "error": data if event.event == "failed" else None,
                }
            )
        else:
            self._line(f"{event.event:>7}  {json.dumps(event.data)}")

    def _part(self, event: Event) -> None:
        """A child's event on a group's stream: a line when the part starts or ends."""
        part = self.state.children[event.job]
        before = part.status
        self.state.apply(event)
        if part.status != before:
            percent = f"{float(part.percent or 0):3.0f}%"
            line = f"   part  {event.job}  {part.status}  {percent}"
            if part.status == "failed" and part.error is not None:
                line += f"  {part.error.get('message') or ''}"
            self._line(line)

    def _continue_text(self, before: str, text: str, truncated: bool) -> None:
        """After a `reset`: print what its text adds to the text shown before; text that does
        not continue it (its beginning was dropped) is printed whole, after "…"."""
        if before and text.startswith(before):
            self._content_text(text[len(before) :])
        elif text != before:
            self._flush_content()
            self._content_text(("…" if truncated else "") + text)

    def close(self) -> None:
        self._flush_content()
        if self._bar_drawn:
            self.out.write("\n")
            self._bar_drawn = False
        self.out.flush()

    # -- drawing --------------------------------------------------------------------------

    def bar(self, width: int) -> str:
        state = self.state
        percent = float(state.percent or 0)
        filled = round(BAR_WIDTH * percent / 100)
        eta = f"ETA {_duration(state.eta_seconds)}" if state.eta_seconds is not None else ""
        parts = [
            state.stage or state.status,
            "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]",
            f"{percent:3.0f}%",
            eta,
            state.message or "",
        ]
        line = "  ".join(part for part in parts if part)
        return line if len(line) < width else line[: max(0, width - 2)] + "…"

    def _progress_changed(self) -> None:
        if self.tty:
            self._draw_bar()
        else:
            self.out.write(self.bar(10_000) + "\n")
            self.out.flush()

    def _draw_bar(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        self.out.write("\r\x1b[2K" + self.bar(width))
        self._bar_drawn = True
        self.out.flush()

    def _line(self, text: str) -> None:
        """A line above the bar (on a terminal) or a plain line."""
        if self.tty and self._bar_drawn:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        if self.tty and self._bar_drawn:
            self._draw_bar()
        self.out.flush()

    def _content_text(self, text: str) -> None:
        self._content += text
        *lines, self._content = self._content.split("\n")
        for line in lines:
            self._line(line)

    def _flush_content(self) -> None:
        if self._content:
            text, self._content = self._content, ""
            self._line(text)

    def _ended(self, snapshot: dict[str, Any]) -> None:
        if self.tty:
            self._draw_bar()
            self.out.write("\n")
            self._bar_drawn = False
        status = snapshot.get("status", self.state.status)
        message = snapshot.get("message") or ""
        if status == "failed":
            error = snapshot.get("error") or {}
            code = error.get("code")
            message = (error.get("message") or message) + (f" ({code})" if code else "")
        elif status == "completed" and snapshot.get("result") is not None:
            result = json.dumps(snapshot["result"])
            message = f"{message}  result: {result}" if message else f"result: {result}"
        self.out.write(f"{status}{': ' + message if message else ''}\n")
        self.out.flush()


def _duration(seconds: float) -> str:
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
