"""The requests of the SDK and how their answers are read (sans-IO).

A :class:`Call` is one logical request: what to send, and for every answer or connection error
what to do next — :class:`Done` with the parsed value, :class:`Wait` then send the same bytes
again, or raise the typed error. The two transports (``sync.py`` on httpx, ``aio.py`` on
aiohttp) only move bytes and sleep.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from progress_relay.client.errors import RateLimited, RelayError, RelayUnavailable, error_for
from progress_relay.client.events import Outgoing
from progress_relay.client.retry import RETRIED_STATUSES, Attempts, RetryPolicy, parse_retry_after

T = TypeVar("T")

USER_AGENT = "progress-relay-python"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


@dataclass(frozen=True)
class Wait:
    delay: float


@dataclass(frozen=True)
class Job:
    """A created job: its ``id``, absolute ``stream_url`` and ``status_url``, and the
    ``subscribe_token`` the relay minted for it (None unless ``auth.jwt_secret`` is set)."""

    id: str
    stream_url: str
    status_url: str
    subscribe_token: str | None = None
    children: tuple[Job, ...] = ()  # a parent created with its children (``relay.group``)


@dataclass(frozen=True)
class Published:
    """The answer to a publish: the events' ``ids`` in order, and ``cancel_requested``."""

    ids: list[str]
    cancel_requested: bool


@dataclass(frozen=True)
class JobsPage:
    jobs: list[dict[str, Any]]
    next_cursor: str | None


class Call(Generic[T]):
    def __init__(
        self,
        request: Request,
        parse: Callable[[int, bytes], T],
        *,
        ok: Iterable[int] = (200,),
        what: str,
    ) -> None:
        self.request = request
        self._parse = parse
        self._ok = frozenset(ok)
        self.what = what
        self._attempts: Attempts | None = None
        self._last_problem = ""

    def begin(self, policy: RetryPolicy, now: float) -> None:
        self._attempts = policy.start(now)

    def answered(
        self, status: int, body: bytes, retry_after: str | None, now: float
    ) -> Done[T] | Wait:
        if status in self._ok:
            return Done(self._parse(status, body))
        code, message = read_error(status, body)
        if status in RETRIED_STATUSES:
            self._last_problem = f"{status} {code}: {message}"
            delay = self._next_delay(now, parse_retry_after(retry_after))
            if delay is not None:
                return Wait(delay)
            raise self._gave_up(now, status, code, message)
        raise error_for(status, code, message)

    def failed(self, problem: str, now: float) -> Wait:
        """The request got no answer (refused, reset, timed out): wait, or raise
        RelayUnavailable when the budget is spent."""
        self._last_problem = problem
        delay = self._next_delay(now, None)
        if delay is None:
            raise self._gave_up(now, 0, "unreachable", problem)
        return Wait(delay)

    def _next_delay(self, now: float, retry_after: float | None) -> float | None:
        assert self._attempts is not None, "begin() first"
        return self._attempts.next_delay(now, retry_after)

    def _gave_up(self, now: float, status: int, code: str, message: str) -> RelayError:
        assert self._attempts is not None
        tries = self._attempts.count
        spent = self._attempts.elapsed(now)
        summary = (
            f"{self.what}: gave up after {tries} attempt{'s' if tries != 1 else ''} in "
            f"{spent:.1f} s; last: {self._last_problem}"
        )
        if status == 429:
            return RateLimited(status, code, summary)
        return RelayUnavailable(status, code, summary)


def read_error(status: int, body: bytes) -> tuple[str, str]:
    """The relay's ``{"error": {"code", "message"}}`` (or a proxy's page) as (code, message)."""
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        decoded = None
    if isinstance(decoded, dict):
        error = decoded.get("error")
        if isinstance(error, dict):
            return str(error.get("code", f"http_{status}")), str(error.get("message", ""))
        if isinstance(error, str):
            return error, str(decoded.get("message", ""))
    text = body.decode("utf-8", "replace").strip()
    return f"http_{status}", text[:200] or f"HTTP {status}"


def _json(body: bytes) -> Any:
    return json.loads(body)


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _names(events: Sequence[Outgoing]) -> str:
    return ", ".join(event.event for event in events[:3]) + (", ..." if len(events) > 3 else "")


def job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


class Calls:
    """Builds every call against one relay (``base_url``); URLs in answers become absolute."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def url(self, path: str) -> str:
        return self.base_url + path

    def _call(
        self,
        request: Request,
        parse: Callable[[int, bytes], T],
        *,
        ok: Iterable[int] = (200,),
        what: str,
    ) -> Call[T]:
        return Call(request, parse, ok=ok, what=f"{what} (relay {self.base_url})")

    def create_job(
        self,
        job_id: str | None,
        ttl: float | None,
        meta: Any,
        *,
        parent: str | None = None,
        weight: float | None = None,
        children: Sequence[dict[str, Any]] | None = None,
    ) -> Call[Job]:
        # The id is chosen here, not by the relay, so that a retried create cannot make two jobs.
        # (The children's ids too: client/groups.py child_specs.)
        body: dict[str, Any] = {"id": job_id or uuid.uuid4().hex}
        if ttl is not None:
            body["ttl"] = ttl
        if meta is not None:
            body["meta"] = meta
        if parent is not None:
            body["parent"] = parent
        if weight is not None:
            body["weight"] = weight
        if children is not None:
            body["children"] = list(children)

        def job(answer: dict[str, Any]) -> Job:
            return Job(
                id=answer["id"],
                stream_url=self.url(answer["stream_url"]),
                status_url=self.url(answer["status_url"]),
                subscribe_token=answer.get("subscribe_token"),
                children=tuple(job(child) for child in answer.get("children", ())),
            )

        def parse(status: int, raw: bytes) -> Job:
            return job(_json(raw))

        return self._call(
            Request("POST", "/v1/jobs", _encode(body)),
            parse,
            ok=(200, 201),
            what=f"create job {body['id']}",
        )

    def publish(self, job_id: str, events: Sequence[Outgoing]) -> Call[Published]:
        if len(events) == 1:
            body: dict[str, Any] = events[0].wire()
        else:
            body = {"events": [event.wire() for event in events]}

        def parse(status: int, raw: bytes) -> Published:
            answer = _json(raw)
            return Published(list(answer["ids"]), bool(answer.get("cancel_requested")))

        return self._call(
            Request("POST", job_path(job_id, "/events"), _encode(body)),
            parse,
            what=f"publish {_names(events)} to job {job_id}",
        )

    def publish_many(
        self, batches: Sequence[tuple[str, Sequence[Outgoing]]]
    ) -> Call[dict[str, Published | RelayError] | None]:
        """One ``POST /v1/events`` for several jobs' events: each job's outcome, its ids or the
        error the single-job route would have raised; None when the relay has no such route
        (404 or 405: older than it)."""
        body = {
            "events": [
                {"job": job_id, **event.wire()} for job_id, events in batches for event in events
            ]
        }

        def parse(status: int, raw: bytes) -> dict[str, Published | RelayError] | None:
            if status in (404, 405):
                return None
            outcomes: dict[str, Published | RelayError] = {}
            for job in _json(raw)["jobs"]:
                error = job.get("error")
                if error is None:
                    outcomes[job["job"]] = Published(
                        list(job["ids"]), bool(job["cancel_requested"])
                    )
                else:
                    status = int(job["status"])
                    outcomes[job["job"]] = error_for(
                        status, str(error["code"]), str(error["message"])
                    )
            return outcomes

        if len(batches) == 1:
            job_id, events = batches[0]
            what = f"publish {_names(events)} to job {job_id}"
        else:
            what = f"publish to {len(batches)} jobs"
        return self._call(
            Request("POST", "/v1/events", _encode(body)),
            parse,
            ok=(200, 207, 404, 405),
            what=what,
        )

    def snapshot(self, job_id: str) -> Call[dict[str, Any]]:
        return self._call(
            Request("GET", job_path(job_id)),
            lambda status, raw: dict(_json(raw)),
            what=f"read job {job_id}",
        )

    def history(
        self, job_id: str, after: str | None = None, limit: int = 1000
    ) -> Call[dict[str, Any]]:
        query = {"limit": str(limit)} | ({"after": after} if after else {})
        return self._call(
            Request("GET", job_path(job_id, "/events") + "?" + urlencode(query)),
            lambda status, raw: dict(_json(raw)),
            what=f"read the history of job {job_id}",
        )

    def jobs_page(
        self, status: Iterable[str] | None, limit: int | None, cursor: str | None
    ) -> Call[JobsPage]:
        query: list[tuple[str, str]] = [("status", s) for s in status or ()]
        if limit is not None:
            query.append(("limit", str(limit)))
        if cursor is not None:
            query.append(("cursor", cursor))
        path = "/v1/jobs" + ("?" + urlencode(query) if query else "")

        def parse(status_code: int, raw: bytes) -> JobsPage:
            answer = _json(raw)
            return JobsPage(list(answer["jobs"]), answer.get("next_cursor"))

        return self._call(Request("GET", path), parse, what="list jobs")

    def cancel(self, job_id: str) -> Call[dict[str, Any]]:
        return self._call(
            Request("POST", job_path(job_id, "/cancel")),
            lambda status, raw: dict(_json(raw)),
            ok=(200, 202),
            what=f"cancel job {job_id}",
        )

    def delete(self, job_id: str) -> Call[None]:
        return self._call(
            Request("DELETE", job_path(job_id)),
            lambda status, raw: None,
            ok=(204,),
            what=f"delete job {job_id}",
        )


def headers(token: str | None, *, body: bool) -> dict[str, str]:
    result = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if body:
        result["Content-Type"] = "application/json"
    if token:
        result["Authorization"] = f"Bearer {token}"
    return result
