"""The errors a request can meet. Each maps to one status and one stable ``code`` on the wire."""

from __future__ import annotations


class RelayError(Exception):
    """Answered as ``{"error": {"code": code, "message": str(self)}}`` with ``status``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class InvalidJson(RelayError):
    code = "invalid_json"


class InvalidJobId(RelayError):
    code = "invalid_job_id"


class InvalidParameter(RelayError):
    code = "invalid_parameter"


class InvalidEvent(RelayError):
    status = 422
    code = "invalid_event"


class InvalidBody(RelayError):
    """A request body other than an event's (creating a job) with a wrong field or type."""

    status = 422
    code = "invalid_body"


class PayloadTooLarge(RelayError):
    status = 413
    code = "payload_too_large"


class JobNotFound(RelayError):
    status = 404
    code = "job_not_found"


class JobFinished(RelayError):
    status = 409
    code = "job_finished"


class TooManyJobs(RelayError):
    status = 503
    code = "too_many_jobs"


class BrokerUnavailable(RelayError):
    status = 503
    code = "broker_unavailable"


class Unauthorized(RelayError):
    status = 401
    code = "unauthorized"


class Forbidden(RelayError):
    status = 403
    code = "forbidden"


class RateLimited(RelayError):
    """Answered with ``Retry-After``."""

    status = 429
    code = "rate_limited"


class TooManyStreams(RelayError):
    """Answered with ``Retry-After``."""

    status = 503
    code = "too_many_streams"


class ShuttingDown(RelayError):
    """A new stream, or /readyz, while the relay drains; answered with ``Retry-After``."""

    status = 503
    code = "shutting_down"


def no_job(job_id: str) -> JobNotFound:
    """The one 404 for a job the broker does not have (never created, deleted or evicted)."""
    return JobNotFound(f"no job {job_id}")


# Why a stream of a job that has gone from the broker ends: the `failed` it gets, by code.
GONE_REASONS = {
    "job_not_found": "job {job_id} was never published",
    "job_expired": "job {job_id} stopped reporting progress and expired",
}
