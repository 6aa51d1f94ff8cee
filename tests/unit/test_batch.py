"""wire/batch.py: decoding a cross-job publish, and the rules its answer follows."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from progress_relay.wire.batch import CrossJobOut, JobOutcome, parse_cross_job
from progress_relay.wire.bodies import ErrorDetail
from progress_relay.wire.errors import (
    InvalidEvent,
    InvalidJobId,
    InvalidJson,
    JsonTooDeep,
    PayloadTooLarge,
    RelayError,
)
from progress_relay.wire.events import validate_order


def parse(body: Any, **limits: int) -> list[Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    settings = {"max_event_bytes": 1000, "max_batch_events": 10, "max_json_depth": 16} | limits
    return parse_cross_job(raw, **settings)


def test_events_are_grouped_per_job_in_order_of_first_appearance() -> None:
    batches = parse(
        {
            "events": [
                {"job": "b", "event": "log", "data": {"message": "1"}},
                {"job": "a", "event": "progress", "data": {"percent": 5}, "key": "k"},
                {"job": "b", "event": "complete"},
            ]
        }
    )
    assert [b.job_id for b in batches] == ["b", "a"]
    assert [d.name for d in batches[0].drafts] == ["log", "complete"]
    assert batches[0].indices == [0, 2]
    assert batches[1].drafts[0].key == "k"
    assert batches[0].drafts[1].data == b"{}"


def test_data_is_compacted_as_on_the_single_job_route() -> None:
    [batch] = parse(b'{"events": [{"job": "a", "event": "x", "data": [1, 2,  3]}]}')
    assert batch.drafts[0].data == b"[1,2,3]"


@pytest.mark.parametrize(
    ("body", "error", "where"),
    [
        (b"{", InvalidJson, "not valid JSON"),
        ({"events": []}, InvalidEvent, "$.events"),
        ([], InvalidEvent, "`$`"),
        ({"events": [{"job": "a"}]}, InvalidEvent, "`event`"),
        ({"events": [{"job": "-a", "event": "x"}]}, InvalidJobId, "$.events[0].job"),
        ({"events": [{"job": "a", "event": "x"}] * 11}, PayloadTooLarge, "at most 10"),
        ({"events": [{"job": "a", "event": "x", "data": "y" * 2000}]}, PayloadTooLarge, "data"),
        ({"events": [{"job": "a", "event": "error"}]}, InvalidEvent, "$.events[0].event"),
        (
            {
                "events": [
                    {"job": "a", "event": "x", "key": "k"},
                    {"job": "a", "event": "y", "key": "k"},
                ]
            },
            InvalidEvent,
            "$.events[1].key",
        ),
        (
            {"events": [{"job": "a", "event": "x", "data": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}]},
            JsonTooDeep,
            "deep",
        ),
    ],
)
def test_a_bad_body_names_its_problem(body: Any, error: type[RelayError], where: str) -> None:
    with pytest.raises(error) as raised:
        parse(body)
    assert where in str(raised.value)


def test_the_same_key_for_two_jobs_is_allowed() -> None:
    body = {
        "events": [{"job": "a", "event": "x", "key": "k"}, {"job": "b", "event": "x", "key": "k"}]
    }
    assert len(parse(body)) == 2


def test_the_order_rule_names_the_place_in_the_request() -> None:
    [batch] = parse({"events": [{"job": "a", "event": "complete"}, {"job": "a", "event": "x"}]})
    validate_order(batch.drafts[-1:], batch.indices[-1:])
    batches = parse(
        {
            "events": [
                {"job": "b", "event": "x"},
                {"job": "a", "event": "complete"},
                {"job": "a", "event": "x"},
            ]
        }
    )
    with pytest.raises(InvalidEvent, match=r"\$\.events\[1\]"):
        validate_order(batches[1].drafts, batches[1].indices)


def test_an_outcome_has_either_ids_or_an_error() -> None:
    answer = CrossJobOut(
        [
            JobOutcome("a", ["e-1"], False),
            JobOutcome("b", status=409, error=ErrorDetail("job_finished", "done")),
        ]
    )
    assert json.loads(msgspec.json.encode(answer)) == {
        "jobs": [
            {"job": "a", "ids": ["e-1"], "cancel_requested": False},
            {"job": "b", "status": 409, "error": {"code": "job_finished", "message": "done"}},
        ]
    }
