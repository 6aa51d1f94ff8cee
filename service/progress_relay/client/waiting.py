"""``wait(job_id)`` (sans-IO): read the snapshot; if the job is not finished, follow its stream
from the snapshot's last event id until the terminal event; then read the snapshot again."""

from __future__ import annotations

from typing import Any

from progress_relay.client.errors import JobNotFound, RelayError
from progress_relay.client.sse import FINISHED


class Waiter:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    @staticmethod
    def missing(error: RelayError) -> None:
        """A job not created yet may still come (the stream waits for it); other errors raise."""
        if not isinstance(error, JobNotFound):
            raise error

    @staticmethod
    def finished(snapshot: dict[str, Any]) -> bool:
        return snapshot.get("status") in FINISHED

    @staticmethod
    def resume_from(snapshot: dict[str, Any] | None) -> str | None:
        if snapshot is None:
            return None
        last: str | None = snapshot.get("last_event_id")
        return last
