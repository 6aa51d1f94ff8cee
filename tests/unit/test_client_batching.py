"""progress_relay.client.batching and Calls.publish_many (sans-IO): the rounds of batching across
jobs, and what each job's publisher gets back from each answer."""

from __future__ import annotations

import json

import pytest

from progress_relay.client import batching
from progress_relay.client.batching import CrossJob, Pending
from progress_relay.client.errors import JobFinished, RelayError, Unauthorized
from progress_relay.client.events import Outgoing
from progress_relay.client.protocol import Calls, Published
from progress_relay.client.retry import RetryPolicy


def pending(job: str, count: int = 1) -> Pending:
    return Pending(job, [Outgoing("log", {"message": str(n)}) for n in range(count)])


def test_the_first_publish_opens_a_window() -> None:
    rounds = CrossJob()
    assert rounds.add(pending("a")) is True
    assert rounds.add(pending("b")) is False
    assert [[p.job_id for p in r] for r in rounds.take()] == [["a", "b"]]
    assert rounds.take() == []
    assert rounds.add(pending("c")) is True


def test_a_round_holds_at_most_max_events_and_never_splits_a_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "MAX_EVENTS", 5)
    rounds = CrossJob()
    for job, count in [("a", 3), ("b", 2), ("c", 4), ("d", 1)]:
        rounds.add(pending(job, count))
    assert [[p.job_id for p in r] for r in rounds.take()] == [["a", "b"], ["c", "d"]]


def test_each_job_gets_its_outcome() -> None:
    a, b, c, d = pending("a"), pending("b"), pending("c"), pending("d")
    finished = JobFinished(409, "job_finished", "done")
    full = RelayError(503, "too_many_jobs", "full")
    CrossJob().settle([a, b, c, d], {"a": Published(["e-1"], True), "b": finished, "c": full})
    assert a.outcome == Published(["e-1"], True) and not a.alone
    assert b.outcome is finished
    assert c.outcome is None and c.alone  # a retried status: sent again on its own route
    assert d.outcome is None and d.alone  # missing from the answer


def test_a_relay_without_the_route_is_remembered() -> None:
    rounds = CrossJob()
    a = pending("a")
    rounds.settle([a], None)
    assert a.alone and rounds.supported is False and not rounds.enabled
    assert CrossJob(supported=False).enabled is False


@pytest.mark.parametrize(("status", "alone"), [(400, True), (413, True), (422, True), (401, False)])
def test_a_request_refused_whole(status: int, alone: bool) -> None:
    a, b = pending("a"), pending("b")
    error = Unauthorized(status, "x", "y") if status == 401 else RelayError(status, "x", "y")
    CrossJob().failed([a, b], error)
    assert [a.alone, b.alone] == [alone, alone]
    assert [a.outcome, b.outcome] == ([None, None] if alone else [error, error])


def test_the_request_names_each_events_job_and_keeps_its_key() -> None:
    events = [Outgoing("log", {"message": "1"}), Outgoing("complete")]
    call = Calls("http://relay").publish_many([("a", events[:1]), ("b", events[1:])])
    assert (call.request.method, call.request.path) == ("POST", "/v1/events")
    assert call.request.body is not None
    assert json.loads(call.request.body) == {
        "events": [
            {"job": "a", "event": "log", "key": events[0].key, "data": {"message": "1"}},
            {"job": "b", "event": "complete", "key": events[1].key},
        ]
    }


def test_the_answers_are_read_per_job() -> None:
    call = Calls("http://relay").publish_many([("a", [Outgoing("x")]), ("b", [Outgoing("x")])])
    call.begin(RetryPolicy(), 0.0)
    answer = {
        "jobs": [
            {"job": "a", "ids": ["e-1"], "cancel_requested": False},
            {"job": "b", "status": 409, "error": {"code": "job_finished", "message": "done"}},
        ]
    }
    done = call.answered(207, json.dumps(answer).encode(), None, 0.0)
    outcomes = done.value  # type: ignore[union-attr]
    assert outcomes["a"] == Published(["e-1"], False)
    assert isinstance(outcomes["b"], JobFinished)
    for status in (404, 405):
        assert call.answered(status, b"{}", None, 0.0).value is None  # type: ignore[union-attr]


def test_what_a_failure_names() -> None:
    calls = Calls("http://relay")
    one = calls.publish_many([("a", [Outgoing("log"), Outgoing("complete")])])
    assert one.what == "publish log, complete to job a (relay http://relay)"
    two = calls.publish_many([("a", [Outgoing("log")]), ("b", [Outgoing("log")])])
    assert two.what == "publish to 2 jobs (relay http://relay)"
