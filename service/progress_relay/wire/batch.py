"""The cross-job publish (``POST /v1/events``): events for many jobs in one body, each naming its
job. Decoded and validated whole before anything is published: a bad event anywhere refuses the
request, naming its path. The events are grouped by job, the jobs in the order of their first
event, each job's events in request order."""

from __future__ import annotations

from typing import Annotated, NamedTuple

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from progress_relay.wire.bodies import ErrorDetail, EventIdText, JobIdText
from progress_relay.wire.errors import InvalidEvent, InvalidJobId, InvalidJson, PayloadTooLarge
from progress_relay.wire.events import (
    Draft,
    EventName,
    IdempotencyKey,
    _at_path,
    _key,
    make_draft,
)
from progress_relay.wire.ids import is_valid_job_id
from progress_relay.wire.json_depth import check_nesting


class JobEventIn(Struct, forbid_unknown_fields=True):
    job: str
    event: EventName
    data: Raw = Raw(b"{}")
    key: IdempotencyKey | UnsetType = UNSET


class CrossJobIn(Struct, forbid_unknown_fields=True):
    events: list[JobEventIn]


_DECODER = msgspec.json.Decoder(CrossJobIn)


class JobBatch(NamedTuple):
    """One job's share of a cross-job publish; ``indices`` are its events' places in the request
    (for error paths)."""

    job_id: str
    drafts: list[Draft]
    indices: list[int]


def parse_cross_job(
    body: bytes, *, max_event_bytes: int, max_batch_events: int, max_json_depth: int
) -> list[JobBatch]:
    """Validate a cross-job publish body; every problem names its JSON path."""
    check_nesting(body, max_json_depth)
    try:
        request = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_at_path(str(exc), "$")) from None
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    items = request.events
    if not items:
        raise InvalidEvent("`events` must not be empty - at `$.events`")
    if len(items) > max_batch_events:
        raise PayloadTooLarge(
            f"a request holds at most {max_batch_events} events (limits.max_batch_events), "
            f"got {len(items)} - at `$.events`"
        )
    batches: dict[str, JobBatch] = {}
    keys: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        path = f"$.events[{index}]"
        if not is_valid_job_id(item.job):
            raise InvalidJobId(
                "invalid job id: 1-128 characters of A-Z a-z 0-9 . _ : -, starting with a "
                f"letter or digit - at `{path}.job`"
            )
        key = _key(item.key)
        if key is not None:
            if (item.job, key) in keys:
                raise InvalidEvent(
                    f"idempotency key {key!r} is used twice for job {item.job} in the request"
                    f" - at `{path}.key`"
                )
            keys.add((item.job, key))
        draft = make_draft(item.event, item.data, path, max_event_bytes, key)
        batch = batches.get(item.job)
        if batch is None:
            batch = batches[item.job] = JobBatch(item.job, [], [])
        batch.drafts.append(draft)
        batch.indices.append(index)
    return list(batches.values())


class JobOutcome(Struct):
    """One job's part of the answer: its ``ids`` and ``cancel_requested`` as the single-job
    route answers them, or the ``status`` and ``error`` that route would have answered."""

    job: JobIdText
    ids: (
        Annotated[
            list[EventIdText],
            Meta(description="one per event of this job, in request order; absent on an error"),
        ]
        | UnsetType
    ) = UNSET
    cancel_requested: bool | UnsetType = UNSET
    status: (
        Annotated[int, Meta(ge=400, le=599, description="the HTTP status of the job's error")]
        | UnsetType
    ) = UNSET
    error: ErrorDetail | UnsetType = UNSET


class CrossJobOut(Struct):
    jobs: Annotated[
        list[JobOutcome],
        Meta(description="one per job, in the order of each job's first event in the request"),
    ]
