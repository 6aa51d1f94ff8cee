"""What the example backends share: the page, the command line and the simulated work."""

from __future__ import annotations

import argparse
import html
import os
from collections.abc import Callable
from pathlib import Path

# The stages of the simulated transcription, in order; the tracker spreads 0-100 % over them.
STAGES = ["upload", "transcribe", "summarize"]
UPLOAD_PARTS = 4
TRANSCRIPT = [
    "Thanks for joining us today.",
    "Let's start with the numbers for the third quarter.",
    "Revenue grew by twelve percent.",
    "Most of it came from the new subscription plans.",
    "Churn stayed flat at two percent.",
    "Next quarter we focus on the mobile app.",
]

_PAGE = Path(__file__).with_name("page.html")


def page(relay_url: str, template: Path = _PAGE) -> str:
    """The page (``template``: examples/page.html by default), pointing at the relay at
    ``relay_url`` (as the browser reaches it)."""
    text = template.read_text(encoding="utf-8")
    return text.replace("{{RELAY_URL}}", html.escape(relay_url.rstrip("/"), quote=True))


def summary(lines: list[str]) -> dict[str, object]:
    """The job's result: what the page shows when the job completes."""
    return {
        "words": sum(len(line.split()) for line in lines),
        "summary": "Q3 revenue up 12 %, churn flat at 2 %; next: the mobile app.",
    }


def arguments(
    description: str,
    default_port: int,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The command line of an example backend; ``more`` adds options of its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--relay",
        default=os.environ.get("PROGRESS_RELAY_URL", "http://127.0.0.1:8080"),
        help="the relay's URL as this backend reaches it (default: $PROGRESS_RELAY_URL, or"
        " http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--public-relay",
        help="the relay's URL as browsers reach it, when it differs from --relay",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("PROGRESS_RELAY_TOKEN"),
        help="a publisher token of the relay (auth.publish_tokens); default: $PROGRESS_RELAY_TOKEN",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument(
        "--delay",
        type=float,
        default=0.5,
        help="seconds each step of the simulated work takes (default: %(default)s)",
    )
    parser.add_argument(
        "--progress-rate",
        type=float,
        default=10.0,
        help="progress events per second per job at most; more often, only the newest is sent"
        " (the SDK's default: %(default)s; 0 sends every one)",
    )
    if more is not None:
        more(parser)
    return parser.parse_args()
