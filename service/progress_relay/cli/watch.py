"""``progress-relay watch JOB``: follow a job in the terminal until it ends.

On a terminal the last line is a progress bar redrawn in place (stage, percent, ETA, message)
and log lines scroll above it; without one (a pipe, a CI log) every change is a plain line.
Exit status: 0 completed, 1 failed, 2 cancelled, 3 relay unreachable, 4 no such job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import deque
from typing import Any, TextIO

from progress_relay.cli.remote import EXIT_NOT_FOUND, fail, guarded, relay_for
from progress_relay.client import Event

EXIT_BY_STATUS = {"completed": 0, "failed": 1, "cancelled": 2}
BAR_WIDTH = 24


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    watch = commands.add_parser(
        "watch",
        parents=[common],
        help="follow a job live: progress bar, logs, exit status by its end",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("job", metavar="JOB")
    watch.set_defaults(run=run_watch)


@guarded
def run_watch(args: argparse.Namespace) -> int:
    view = WatchView(sys.stdout, tty=sys.stdout.isatty())
    try:
        with relay_for(args) as relay:
            relay.snapshot(args.job)  # JobNotFound (exit 4) for a job that does not exist
            for event in relay.subscribe(args.job):
                view.apply(event)
            if view.status not in EXIT_BY_STATUS:
                # The stream ended without a terminal event: the job was deleted or evicted.
                view.show_snapshot(relay.snapshot(args.job), logs=False)
    except KeyboardInterrupt:
        return 130
    finally:
        view.close()  # the cursor leaves the bar's line before any message on stderr
    if view.status not in EXIT_BY_STATUS:
        return fail(f"job {args.job} ended without a terminal event", EXIT_NOT_FOUND)
    return EXIT_BY_STATUS[view.status]


class Eta:
    """Seconds left from the rate of the last (up to 10) percent values; None until 3."""

    def __init__(self) -> None:
        self._points: deque[tuple[float, float]] = deque(maxlen=10)

    def add(self, now: float, percent: float) -> None:
        if self._points and percent < self._points[-1][1]:
            self._points.clear()
        self._points.append((now, percent))

    def seconds(self) -> float | None:
        if len(self._points) < 3:
            return None
        (t0, p0), (t1, p1) = self._points[0], self._points[-1]
        if p1 >= 100:
            return 0.0
        if t1 - t0 < 0.5 or p1 <= p0:
            return None
        return (100 - p1) * (t1 - t0) / (p1 - p0)


class WatchView:
    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.status = "pending"
        self.percent: float | None = None
        self.stage: str | None = None
        self.message: str | None = None
        self.eta = Eta()
        self._eta_seconds: float | None = None
        self._content = ""
        self._bar_drawn = False

    # -- state ----------------------------------------------------------------------------

    def show_snapshot(self, snapshot: dict[str, Any], *, logs: bool) -> None:
        self.status = snapshot.get("status", self.status)
        self.percent = snapshot.get("percent")
        self.stage = snapshot.get("stage")
        self.message = snapshot.get("message")
        self._eta_seconds = snapshot.get("eta_seconds")
        if logs:
            for entry in snapshot.get("logs") or []:
                self._line(f"{entry.get('level', 'info'):>7}  {entry.get('message', '')}")
        self._progress_changed()
        if self.status in EXIT_BY_STATUS:
            self._ended(snapshot)

    def apply(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.event == "progress":
            self.status = "running"
            for name in ("percent", "stage", "message"):
                if data.get(name) is not None:
                    setattr(self, name, data[name])
            if self.percent is not None:
                self.eta.add(time.monotonic(), float(self.percent))
                self._eta_seconds = self.eta.seconds()
            self._progress_changed()
        elif event.event == "log":
            self._line(f"{data.get('level', 'info'):>7}  {data.get('message', '')}")
        elif event.event == "content":
            self._content_text(str(data.get("text", "")))
        elif event.event == "cancel_requested":
            self._line("         cancel requested")
        elif event.event == "reset":
            self.show_snapshot(data, logs=True)
        elif event.terminal:
            self._flush_content()
            self.status = {"complete": "completed"}.get(event.event, event.event)
            if event.event == "complete":
                self.percent = 100
            self.message = data.get("message", self.message)
            self._ended(
                {
                    "status": self.status,
                    "message": data.get("message"),
                    "result": data.get("result"),
                    "error": data if event.event == "failed" else None,
                }
            )
        else:
            self._line(f"{event.event:>7}  {json.dumps(event.data)}")

    def close(self) -> None:
        self._flush_content()
        if self._bar_drawn:
            self.out.write("\n")
            self._bar_drawn = False
        self.out.flush()

    # -- drawing --------------------------------------------------------------------------

    def bar(self, width: int) -> str:
        percent = float(self.percent or 0)
        filled = round(BAR_WIDTH * percent / 100)
        eta = f"ETA {_duration(self._eta_seconds)}" if self._eta_seconds is not None else ""
        parts = [
            self.stage or self.status,
            "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]",
            f"{percent:3.0f}%",
            eta,
            self.message or "",
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
        status = snapshot.get("status", self.status)
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
