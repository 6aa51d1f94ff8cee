"""The errors a request can meet. Each maps to one status and one stable ``code`` on the wire,
and says what it means (``description``, for the OpenAPI document)."""

from __future__ import annotations

from typing import ClassVar


class RelayError(Exception):
    """Answered as ``{"error": {"code": code, "message": str(self)}}`` with ``status``.

    ``documented_headers``: (name, always) of each response header the error comes with.
    ``closes``: the connection is closed after the answer (what is left of the request
    cannot be read).
    """

    status = 400
    code = "bad_request"
    description = "the request is not valid"
    documented_headers: ClassVar[tuple[tuple[str, bool], ...]] = ()
    closes: ClassVar[bool] = False

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class InvalidJson(RelayError):
    code = "invalid_json"
    description = "the body is not valid JSON (or event data is not valid UTF-8)"


class JsonTooDeep(RelayError):
    code = "json_too_deep"
    description = "the JSON body nests arrays and objects deeper than limits.max_json_depth"


class InvalidJobId(RelayError):
    code = "invalid_job_id"
    description = "a job id breaks the rules of JobId"


class InvalidParameter(RelayError):
    code = "invalid_parameter"
    description = "a query parameter is out of range or malformed"


class InvalidEvent(RelayError):
    status = 422
    code = "invalid_event"
    description = "the publish body does not match its schema"


class InvalidBody(RelayError):
    """A request body other than an event's (creating a job) with a wrong field or type."""

    status = 422
    code = "invalid_body"
    description = "the create body has a wrong field type, a value out of range or an unknown field"


class WebhookNotAllowed(RelayError):
    status = 422
    code = "webhook_not_allowed"
    description = (
        "the job's webhook is not an http(s) URL without credentials to a destination in "
        "webhooks.allowed, or the relay has no webhooks.secret"
    )


class PayloadTooLarge(RelayError):
    status = 413
    code = "payload_too_large"
    description = "event data, meta, a batch or the request body is over its limit"


class JobNotFound(RelayError):
    status = 404
    code = "job_not_found"
    description = "the job does not exist (never created, deleted or evicted)"


class JobFinished(RelayError):
    status = 409
    code = "job_finished"
    description = "the job already had its terminal event"


class TooManyChildren(RelayError):
    status = 413
    code = "too_many_children"
    description = "a parent would have more than limits.max_children children"


class GroupTooDeep(RelayError):
    status = 422
    code = "group_too_deep"
    description = "a group would have more than limits.max_group_depth levels"


class GroupConflict(RelayError):
    status = 409
    code = "group_conflict"
    description = "the job exists with another parent (or none): a job's parent is set once"


class TooManyJobs(RelayError):
    status = 503
    code = "too_many_jobs"
    description = "a new job while the relay holds its maximum; see Retry-After"
    documented_headers = (("Retry-After", True),)


class MemoryFull(RelayError):
    status = 503
    code = "memory_full"
    description = (
        "the relay holds its memory bound (limits.memory_bytes, or Redis's maxmemory); "
        "nothing was changed; see Retry-After"
    )
    documented_headers = (("Retry-After", True),)


class BrokerUnavailable(RelayError):
    """Redis did not answer, or lost the connection. Always with ``Retry-After``: a client that
    honours it comes back once the relay has had time to reconnect."""

    status = 503
    code = "broker_unavailable"
    description = (
        "Redis did not answer in time or cannot be reached; retry (a publish whose events "
        "carry idempotency keys is never stored twice); see Retry-After"
    )
    documented_headers = (("Retry-After", True),)
    RETRY_AFTER = "1"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"Retry-After": self.RETRY_AFTER, **(headers or {})})


class Unauthorized(RelayError):
    status = 401
    code = "unauthorized"
    description = "a credential is missing, invalid or expired"
    # When the credential is missing, or a publisher token is wrong.
    documented_headers = (("WWW-Authenticate", False),)


class Forbidden(RelayError):
    status = 403
    code = "forbidden"
    description = "the subscriber token does not grant this job (to list or delete: every job)"


class OriginNotAllowed(RelayError):
    """A browser's cross-site request that would change something, or its preflight."""

    status = 403
    code = "origin_not_allowed"
    description = (
        "a POST or DELETE (or its preflight) from a page whose origin is neither listed in "
        "cors.origins nor the relay's own; nothing was changed"
    )


class UnsupportedMediaType(RelayError):
    status = 415
    code = "unsupported_media_type"
    description = "a request body that is not sent as Content-Type: application/json"


class RequestTimeout(RelayError):
    status = 408
    code = "request_timeout"
    description = (
        "the request's body (or its head) did not arrive within server.body_timeout "
        "(server.header_timeout); the connection is closed"
    )
    closes = True


class UriTooLong(RelayError):
    """Answered by the connection itself (ops/connections.py), before any route is matched."""

    status = 414
    code = "uri_too_long"
    description = "the request line is longer than the relay reads; nothing was done"
    closes = True


class HeadersTooLarge(RelayError):
    """Answered by the connection itself (ops/connections.py), before any route is matched."""

    status = 431
    code = "headers_too_large"
    description = "the request's head is longer than the relay reads; nothing was done"
    closes = True


# What a connection answers itself, on any path, before a route is matched.
CONNECTION_ERRORS: tuple[type[RelayError], ...] = (UriTooLong, HeadersTooLarge)


class RateLimited(RelayError):
    status = 429
    code = "rate_limited"
    description = "too many requests for this job or publisher; see Retry-After"
    documented_headers = (("Retry-After", True),)


class TooManyStreams(RelayError):
    status = 503
    code = "too_many_streams"
    description = "the relay holds its maximum of open streams; see Retry-After"
    documented_headers = (("Retry-After", True),)


class ShuttingDown(RelayError):
    """A new stream, or /readyz, while the relay drains."""

    status = 503
    code = "shutting_down"
    description = "the relay is draining; connect again (to another instance); see Retry-After"
    documented_headers = (("Retry-After", False),)  # a new stream gets it, /readyz does not


class NoSuchEndpoint(RelayError):
    """aiohttp's own: no route for the path."""

    status = 404
    code = "not_found"
    description = "no such endpoint"


class MethodNotAllowed(RelayError):
    """aiohttp's own: the path is routed, the method is not."""

    status = 405
    code = "method_not_allowed"
    description = "the path exists, the method does not; see Allow"
    documented_headers = (("Allow", True),)


# The errors aiohttp raises itself, before a handler runs (a body over client_max_size is 413).
AIOHTTP_ERRORS: tuple[type[RelayError], ...] = (NoSuchEndpoint, MethodNotAllowed, PayloadTooLarge)


def error_classes() -> list[type[RelayError]]:
    """Every error the relay answers with (not the base class, which is never raised)."""
    found: list[type[RelayError]] = []
    pending = RelayError.__subclasses__()
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


# What every error code means.
ERROR_CODES: dict[str, str] = {cls.code: cls.description for cls in error_classes()}


def no_job(job_id: str) -> JobNotFound:
    """The one 404 for a job the broker does not have (never created, deleted or evicted)."""
    return JobNotFound(f"no job {job_id}")


# Why a stream of a job that has gone from the broker ends: the `failed` it gets, by code.
GONE_REASONS = {
    "job_not_found": "job {job_id} was never published",
    "job_expired": "job {job_id} stopped reporting progress and expired",
}
