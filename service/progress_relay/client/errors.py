"""What the SDK raises. Every error of the relay is a :class:`RelayError` naming the relay's
``code`` and ``message``; :class:`Cancelled` is not one: it is how a tracker tells the worker
that a viewer asked to stop."""

from __future__ import annotations


class RelayError(Exception):
    """The relay refused a request: ``status`` (HTTP), ``code`` (stable, e.g. ``job_finished``)
    and ``message`` (for humans) as the relay answered them."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.message = message


class BadRequest(RelayError):
    """400, 413 or 422: the request itself is wrong (bad job id, bad event, too large)."""


class Unauthorized(RelayError):
    """401: a publisher or subscriber token is needed, or the one given is not valid."""


class Forbidden(RelayError):
    """403: the subscriber token does not grant this job."""


class JobNotFound(RelayError):
    """404 ``job_not_found``: no such job (never created, deleted or evicted)."""


class JobFinished(RelayError):
    """409 ``job_finished``: the job already had its terminal event."""


class RateLimited(RelayError):
    """429 ``rate_limited`` for longer than the retry budget."""


class RelayUnavailable(RelayError):
    """The relay could not be reached, or answered 5xx (503 ``broker_unavailable``,
    ``shutting_down``, ...), for longer than the retry budget. ``status`` is 0 when no answer
    came at all."""


class Cancelled(Exception):
    """A viewer asked to cancel the job (``POST /v1/jobs/{id}/cancel``). Raised by the next
    tracker call after the relay said so; ``track`` then publishes ``cancelled``."""

    def __init__(self, job_id: str, message: str | None = None) -> None:
        super().__init__(message or f"job {job_id} was cancelled by a viewer")
        self.job_id = job_id


def error_for(status: int, code: str, message: str) -> RelayError:
    """The typed error for an answer of the relay."""
    if status == 404 and code == "job_not_found":
        return JobNotFound(status, code, message)
    if status == 409:
        return JobFinished(status, code, message)
    if status == 401:
        return Unauthorized(status, code, message)
    if status == 403:
        return Forbidden(status, code, message)
    if status == 429:
        return RateLimited(status, code, message)
    if status >= 500:
        return RelayUnavailable(status, code, message)
    if status in (400, 413, 422):
        return BadRequest(status, code, message)
    return RelayError(status, code, message)
