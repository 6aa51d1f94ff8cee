"""The publishing API and everything around a job's resource: create, snapshot, cancel, delete,
history, and what bad input gets (a JSON 4xx naming the field, and nothing else changes)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from progress_relay.wire.ids import parse_event_id
from tests.support.app import MakeClient, error_of, publish, publish_many, stream_opener

LIMITS = {"max_event_bytes": 100, "max_batch_events": 3, "max_request_bytes": 2048}


def seqs(ids: list[str]) -> list[int]:
    positions = [parse_event_id(i) for i in ids]
    assert all(p is not None for p in positions), ids
    return [p.seq for p in positions if p is not None]


# --- publish ---------------------------------------------------------------------------------


async def test_single_publish_returns_one_id(client) -> None:
    response = await client.post("/v1/jobs/a/events", json={"event": "progress", "data": {}})
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"ids", "cancel_requested"}
    assert body["cancel_requested"] is False
    assert len(body["ids"]) == 1 and isinstance(body["ids"][0], str)


async def test_batch_publish_returns_strictly_increasing_ids(client) -> None:
    first = await publish(client, "b", "progress", {"percent": 1})
    body = {"events": [{"event": "log", "data": {"message": f"m{i}"}} for i in range(5)]}
    response = await client.post("/v1/jobs/b/events", json=body)
    assert response.status == 200
    result = await response.json()
    assert result["cancel_requested"] is False
    ids = result["ids"]
    assert len(ids) == 5
    later = await publish(client, "other", "progress", {"percent": 1})
    order = seqs([first, *ids, later])
    assert order == sorted(order) and len(set(order)) == len(order)


async def test_event_without_data_defaults_to_empty_object(client, open_stream) -> None:
    response = await client.post("/v1/jobs/nd/events", json={"event": "chart.ready"})
    assert response.status == 200
    async with open_stream("/v1/jobs/nd/stream") as (_, reader):
        [frame] = await reader.events(1)
    assert (frame.event, frame.data) == ("chart.ready", "{}")


@pytest.mark.parametrize(
    "data",
    [[1, "two", {"three": 3}], "a string", 42, 3.5, None, True, {"nested": {"a": [1, 2]}}],
    ids=["array", "string", "int", "float", "null", "bool", "object"],
)
async def test_custom_event_payloads_are_forwarded_as_is(client, open_stream, data: Any) -> None:
    response = await client.post("/v1/jobs/c/events", json={"event": "chart.ready", "data": data})
    assert response.status == 200, await response.text()
    [event_id] = (await response.json())["ids"]
    async with open_stream("/v1/jobs/c/stream") as (_, reader):
        [frame] = await reader.events(1)
    assert (frame.id, frame.event) == (event_id, "chart.ready")
    assert frame.data == json.dumps(data, separators=(",", ":"))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("progress", {"percent": 10, "eta_hint": "soon", "extra": {"a": [1, 2]}, "stage": "s"}),
        ("log", {"message": "m", "level": "warning", "source": "worker-3"}),
        ("content", {"text": "tok", "index": 7}),
        ("complete", {"result": {"n": 1}, "took_ms": 1234}),
        ("failed", {"message": "boom", "code": "E1", "retryable": False}),
        ("cancelled", {"by": "user"}),
    ],
)
async def test_extra_fields_of_known_payloads_are_forwarded_unchanged(
    client, open_stream, name: str, data: dict[str, Any]
) -> None:
    event_id = await publish(client, "x", name, data)
    async with open_stream("/v1/jobs/x/stream") as (_, reader):
        [frame] = await reader.events(1)
    assert (frame.id, frame.event) == (event_id, name)
    assert frame.data == json.dumps(data, separators=(",", ":"))


async def test_whitespace_in_payload_is_compacted_to_one_line(client, open_stream) -> None:
    body = b'{"event": "progress",\n "data": {\n  "percent": 5,\n  "message": "a b\\nc"\n}}'
    response = await client.post(
        "/v1/jobs/ws/events", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    async with open_stream("/v1/jobs/ws/stream") as (_, reader):
        [frame] = await reader.events(1)
    assert frame.data == '{"percent":5,"message":"a b\\nc"}'


# --- bad input --------------------------------------------------------------------------------

J = {"Content-Type": "application/json"}
LONG_NAME = "a" * 65
BAD: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    # (id, method, path, request kwargs, status, code, fragment of the message)
    (
        "invalid-json",
        "POST",
        "/v1/jobs/t/events",
        {"data": b"{nope", "headers": J},
        400,
        "invalid_json",
        "",
    ),
    (
        "empty-body",
        "POST",
        "/v1/jobs/t/events",
        {"data": b"", "headers": J},
        400,
        "invalid_json",
        "",
    ),
    ("json-not-object", "POST", "/v1/jobs/t/events", {"json": [1, 2]}, 422, "invalid_event", ""),
    (
        "percent-wrong-type",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "data": {"percent": "half"}}},
        422,
        "invalid_event",
        "$.data.percent",
    ),
    (
        "batch-wrong-type",
        "POST",
        "/v1/jobs/t/events",
        {
            "json": {
                "events": [
                    {"event": "log", "data": {"message": "ok"}},
                    {"event": "log", "data": {"message": 5}},
                ]
            }
        },
        422,
        "invalid_event",
        "$.events[1].data.message",
    ),
    (
        "percent-over-100",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "data": {"percent": 100.5}}},
        422,
        "invalid_event",
        "$.data.percent",
    ),
    (
        "percent-negative",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "data": {"percent": -1}}},
        422,
        "invalid_event",
        "$.data.percent",
    ),
    (
        "step-negative",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "data": {"step": -1}}},
        422,
        "invalid_event",
        "$.data.step",
    ),
    (
        "progress-data-not-object",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "data": [1]}},
        422,
        "invalid_event",
        "$.data",
    ),
    (
        "log-without-message",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "log", "data": {"level": "info"}}},
        422,
        "invalid_event",
        "message",
    ),
    (
        "log-bad-level",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "log", "data": {"message": "m", "level": "loud"}}},
        422,
        "invalid_event",
        "$.data.level",
    ),
    (
        "failed-without-message",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "failed", "data": {"code": "E"}}},
        422,
        "invalid_event",
        "message",
    ),
    (
        "content-without-text",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "content", "data": {}}},
        422,
        "invalid_event",
        "text",
    ),
    (
        "reserved-reset",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "reset", "data": {}}},
        422,
        "invalid_event",
        "reset",
    ),
    (
        "reserved-cancel-requested",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "cancel_requested", "data": {}}},
        422,
        "invalid_event",
        "cancel_requested",
    ),
    (
        "reserved-error",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "error", "data": {"message": "m"}}},
        422,
        "invalid_event",
        "failed",
    ),
    (
        "name-starts-with-digit",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "1abc"}},
        422,
        "invalid_event",
        "event",
    ),
    (
        "name-with-space",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "a b"}},
        422,
        "invalid_event",
        "event",
    ),
    (
        "name-with-newline",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "a\nb"}},
        422,
        "invalid_event",
        "event",
    ),
    (
        "name-65-chars",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": LONG_NAME}},
        422,
        "invalid_event",
        "event",
    ),
    (
        "name-empty",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": ""}},
        422,
        "invalid_event",
        "event",
    ),
    (
        "batch-bad-name",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"events": [{"event": "log", "data": {"message": "ok"}}, {"event": "a b"}]}},
        422,
        "invalid_event",
        "$.events[1]",
    ),
    (
        "unknown-top-level-field",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "data": {}, "priority": 1}},
        422,
        "invalid_event",
        "priority",
    ),
    (
        "missing-event",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"data": {}}},
        422,
        "invalid_event",
        "event",
    ),
    (
        "event-and-events",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "progress", "events": [{"event": "progress"}]}},
        422,
        "invalid_event",
        "events",
    ),
    (
        # the batch used to be published and this `data` silently dropped
        "data-and-events",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"data": {"percent": 5}, "events": [{"event": "progress"}]}},
        422,
        "invalid_event",
        "events",
    ),
    (
        "empty-batch",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"events": []}},
        422,
        "invalid_event",
        "events",
    ),
    (
        "terminal-not-last",
        "POST",
        "/v1/jobs/t/events",
        {
            "json": {
                "events": [
                    {"event": "complete", "data": {}},
                    {"event": "progress", "data": {"percent": 1}},
                ]
            }
        },
        422,
        "invalid_event",
        "$.events[0]",
    ),
    (
        "event-too-large",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"event": "log", "data": {"message": "x" * 200}}},
        413,
        "payload_too_large",
        "$.data",
    ),
    (
        "batch-event-too-large",
        "POST",
        "/v1/jobs/t/events",
        {
            "json": {
                "events": [
                    {"event": "log", "data": {"message": "ok"}},
                    {"event": "log", "data": {"message": "x" * 200}},
                ]
            }
        },
        413,
        "payload_too_large",
        "$.events[1].data",
    ),
    (
        "batch-too-many",
        "POST",
        "/v1/jobs/t/events",
        {"json": {"events": [{"event": "progress", "data": {"percent": i}} for i in range(4)]}},
        413,
        "payload_too_large",
        "3",
    ),
    (
        "body-too-large",
        "POST",
        "/v1/jobs/t/events",
        {"data": b'{"event":"progress","data":{}}' + b" " * 4000, "headers": J},
        413,
        "payload_too_large",
        "",
    ),
    (
        "publish-after-terminal",
        "POST",
        "/v1/jobs/done/events",
        {"json": {"event": "progress", "data": {"percent": 1}}},
        409,
        "job_finished",
        "done",
    ),
    (
        "job-id-leading-dash",
        "POST",
        "/v1/jobs/-x/events",
        {"json": {"event": "progress"}},
        400,
        "invalid_job_id",
        "-x",
    ),
    (
        "job-id-129-chars",
        "POST",
        f"/v1/jobs/{'a' * 129}/events",
        {"json": {"event": "progress"}},
        400,
        "invalid_job_id",
        "",
    ),
    (
        "job-id-newline",
        "POST",
        "/v1/jobs/a%0Ab/events",
        {"json": {"event": "progress"}},
        400,
        "invalid_job_id",
        "a\\nb",
    ),
    (
        "job-id-space",
        "POST",
        "/v1/jobs/a%20b/events",
        {"json": {"event": "progress"}},
        400,
        "invalid_job_id",
        "",
    ),
    ("unknown-route", "POST", "/v1/nowhere", {"json": {"event": "progress"}}, 404, "not_found", ""),
    (
        "wrong-method",
        "PUT",
        "/v1/jobs/t/events",
        {"json": {"event": "progress"}},
        405,
        "method_not_allowed",
        "",
    ),
    (
        "create-invalid-id",
        "POST",
        "/v1/jobs",
        {"json": {"id": "-bad"}},
        400,
        "invalid_job_id",
        "-bad",
    ),
    (
        "create-unknown-field",
        "POST",
        "/v1/jobs",
        {"json": {"id": "new", "owner": "me"}},
        422,
        "invalid_body",
        "owner",
    ),
    (
        "create-bad-ttl",
        "POST",
        "/v1/jobs",
        {"json": {"id": "new", "ttl": 0}},
        422,
        "invalid_body",
        "ttl",
    ),
    (
        "create-invalid-json",
        "POST",
        "/v1/jobs",
        {"data": b"{", "headers": J},
        400,
        "invalid_json",
        "",
    ),
    ("cancel-unknown", "POST", "/v1/jobs/ghost/cancel", {}, 404, "job_not_found", "ghost"),
    ("cancel-finished", "POST", "/v1/jobs/done/cancel", {}, 409, "job_finished", "done"),
    ("delete-unknown", "DELETE", "/v1/jobs/ghost", {}, 404, "job_not_found", "ghost"),
    ("snapshot-unknown", "GET", "/v1/jobs/ghost", {}, 404, "job_not_found", "ghost"),
    (
        "history-limit-zero",
        "GET",
        "/v1/jobs/t/events?limit=0",
        {},
        400,
        "invalid_parameter",
        "limit",
    ),
    (
        "history-bad-after",
        "GET",
        "/v1/jobs/t/events?after=zz",
        {},
        400,
        "invalid_parameter",
        "after",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "fragment"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
async def test_bad_request_gets_json_error_and_changes_nothing(
    make_client: MakeClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    fragment: str,
) -> None:
    client = await make_client(limits=LIMITS)
    await publish_many(client, "t", [("progress", {"percent": 10}), ("log", {"message": "hi"})])
    await publish(client, "done", "complete", {"result": 1})
    await publish(client, "other", "progress", {"percent": 5})

    async def state() -> list[bytes]:
        found = []
        for job in ("t", "done", "other"):
            for suffix in ("", "/events"):
                response = await client.get(f"/v1/jobs/{job}{suffix}")
                assert response.status == 200
                found.append(await response.read())
        for job in ("ghost", "new", "a b", "-x"):
            response = await client.get(f"/v1/jobs/{job}")
            assert response.status in (400, 404)
        return found

    async with stream_opener(client)("/v1/jobs/other/stream") as (_, reader):
        [replayed] = await reader.events(1)
        assert replayed.event == "progress"
        before = await state()

        response = await client.request(method, path, **kwargs)
        message = await error_of(response, status, code)
        assert fragment in message, message

        assert await state() == before
        for job in ("ghost", "new"):
            assert (await client.get(f"/v1/jobs/{job}")).status == 404
        next_id = await publish(client, "other", "log", {"message": "after"})
        [frame] = await reader.events(1)
        assert (frame.id, frame.event, frame.json) == (next_id, "log", {"message": "after"})


async def test_body_over_max_request_bytes_is_413_json(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_request_bytes": 1024})
    body = {"event": "x", "data": "y" * 2000}
    response = await client.post("/v1/jobs/big/events", json=body)
    await error_of(response, 413, "payload_too_large")
    assert (await client.get("/v1/jobs/big")).status == 404


async def test_payload_over_max_event_bytes_is_413(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_event_bytes": 100})
    response = await client.post(
        "/v1/jobs/p/events", json={"event": "content", "data": {"text": "z" * 101}}
    )
    message = await error_of(response, 413, "payload_too_large")
    assert "100" in message
    ok = await client.post("/v1/jobs/p/events", json={"event": "content", "data": {"text": "z"}})
    assert ok.status == 200


async def test_batch_of_exactly_max_batch_events_is_accepted(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_batch_events": 3})
    ids = await publish_many(client, "m", [("progress", {"percent": i}) for i in range(3)])
    assert len(ids) == 3


async def test_publish_after_terminal_is_409(client) -> None:
    await publish(client, "f", "failed", {"message": "boom"})
    response = await client.post(
        "/v1/jobs/f/events", json={"event": "log", "data": {"message": "m"}}
    )
    await error_of(response, 409, "job_finished")


async def test_batch_missing_field_names_the_event(client) -> None:
    body = {"events": [{"event": "log", "data": {"message": "ok"}}, {"event": "log", "data": {}}]}
    response = await client.post("/v1/jobs/mf/events", json=body)
    message = await error_of(response, 422, "invalid_event")
    assert "message" in message
    assert "$.events[1].data" in message, message


async def test_wrong_method_names_allowed_methods(client) -> None:
    response = await client.put("/v1/jobs/t/events", json={})
    await error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers.get("Allow", "")


# --- create -----------------------------------------------------------------------------------


async def test_create_without_body_generates_an_id(client) -> None:
    response = await client.post("/v1/jobs")
    assert response.status == 201, await response.text()
    body = await response.json()
    job_id = body["id"]
    assert isinstance(job_id, str) and job_id
    assert body["stream_url"] == f"/v1/jobs/{job_id}/stream"
    assert body["status_url"] == f"/v1/jobs/{job_id}"
    snapshot = await (await client.get(body["status_url"])).json()
    assert (snapshot["id"], snapshot["status"]) == (job_id, "pending")
    second = await (await client.post("/v1/jobs")).json()
    assert second["id"] != job_id


async def test_create_with_id_is_idempotent(client) -> None:
    first = await client.post("/v1/jobs", json={"id": "x", "meta": {"owner": "ann"}})
    assert first.status == 201
    second = await client.post("/v1/jobs", json={"id": "x", "meta": {"owner": "bob"}})
    assert second.status == 200
    assert await first.json() == await second.json()
    assert (await first.json())["id"] == "x"
    snapshot = await (await client.get("/v1/jobs/x")).json()
    assert snapshot["meta"] == {"owner": "ann"}


async def test_create_after_publish_does_not_reset_the_job(client) -> None:
    await publish(client, "y", "progress", {"percent": 40})
    response = await client.post("/v1/jobs", json={"id": "y"})
    assert response.status == 200
    snapshot = await (await client.get("/v1/jobs/y")).json()
    assert (snapshot["status"], snapshot["percent"]) == ("running", 40)


@pytest.mark.parametrize("job_id", ["-x", "a b", "a" * 129, "", "a/b", "é"])
async def test_create_with_invalid_id_is_400(client, job_id: str) -> None:
    response = await client.post("/v1/jobs", json={"id": job_id})
    await error_of(response, 400, "invalid_job_id")


async def test_create_with_unknown_field_is_422(client) -> None:
    response = await client.post("/v1/jobs", json={"name": "x"})
    message = await error_of(response, 422, "invalid_body")
    assert "name" in message


async def test_create_with_128_char_id_is_ok(client) -> None:
    job_id = "A" + "b.c_d:e-" * 15 + "1234567"
    assert len(job_id) == 128
    response = await client.post("/v1/jobs", json={"id": job_id})
    assert response.status == 201
    assert (await client.get(f"/v1/jobs/{job_id}")).status == 200


# --- snapshot ---------------------------------------------------------------------------------


async def test_snapshot_of_unknown_job_is_404(client) -> None:
    await error_of(await client.get("/v1/jobs/nope"), 404, "job_not_found")


async def test_snapshot_follows_progress_and_completes(client) -> None:
    await client.post("/v1/jobs", json={"id": "s"})
    snapshot = await (await client.get("/v1/jobs/s")).json()
    assert snapshot["status"] == "pending"
    assert snapshot["percent"] is None and snapshot["last_event_id"] is None
    for key in (
        "id", "status", "percent", "stage", "message", "step", "total_steps", "eta_seconds",
        "result", "error", "cancel_requested", "created_at", "updated_at", "last_event_id",
        "subscribers", "logs",
    ):  # fmt: skip
        assert key in snapshot, key
    first = await publish(
        client,
        "s",
        "progress",
        {"percent": 30, "stage": "index", "message": "Indexing", "step": 2, "total_steps": 5},
    )
    snapshot = await (await client.get("/v1/jobs/s")).json()
    assert snapshot["status"] == "running"
    assert snapshot["percent"] == 30
    assert (snapshot["stage"], snapshot["message"]) == ("index", "Indexing")
    assert (snapshot["step"], snapshot["total_steps"]) == (2, 5)
    assert snapshot["last_event_id"] == first
    # A partial update keeps the other fields.
    await publish(client, "s", "progress", {"percent": 55.5})
    snapshot = await (await client.get("/v1/jobs/s")).json()
    assert (snapshot["percent"], snapshot["stage"], snapshot["step"]) == (55.5, "index", 2)
    last = await publish(
        client,
        "s",
        "complete",
        {"result": {"rows": 3}, "message": "Done", "redirect_url": "/r/1"},
    )
    snapshot = await (await client.get("/v1/jobs/s")).json()
    assert snapshot["status"] == "completed"
    assert snapshot["percent"] == 100
    assert snapshot["result"] == {"rows": 3}
    assert snapshot["redirect_url"] == "/r/1"
    assert snapshot["message"] == "Done"
    assert snapshot["eta_seconds"] is None
    assert snapshot["error"] is None
    assert snapshot["last_event_id"] == last


async def test_snapshot_failed_carries_the_error(client) -> None:
    await publish(client, "e", "progress", {"percent": 20})
    details = {"file": "a.wav", "line": [1, 2]}
    await publish(
        client, "e", "failed", {"message": "Decoder crashed", "code": "E42", "details": details}
    )
    snapshot = await (await client.get("/v1/jobs/e")).json()
    assert snapshot["status"] == "failed"
    assert snapshot["error"] == {"message": "Decoder crashed", "code": "E42", "details": details}
    assert snapshot["message"] == "Decoder crashed"
    assert snapshot["percent"] == 20


async def test_snapshot_cancelled(client) -> None:
    await publish(client, "cx", "progress", {"percent": 20})
    await publish(client, "cx", "cancelled", {"message": "Stopped by user"})
    snapshot = await (await client.get("/v1/jobs/cx")).json()
    assert (snapshot["status"], snapshot["message"]) == ("cancelled", "Stopped by user")


async def test_snapshot_log_tail_keeps_the_last_20(client) -> None:
    levels = ["debug", "info", "success", "warning", "error"]
    events = [("log", {"message": f"m{i}", "level": levels[i % 5]}) for i in range(25)]
    ids = await publish_many(client, "l", events)
    await publish(client, "l", "log", {"message": "plain"})
    snapshot = await (await client.get("/v1/jobs/l")).json()
    logs = snapshot["logs"]
    assert len(logs) == 20
    assert [entry["message"] for entry in logs] == [f"m{i}" for i in range(6, 25)] + ["plain"]
    assert [entry["level"] for entry in logs[:-1]] == [levels[i % 5] for i in range(6, 25)]
    assert logs[-1]["level"] == "info"
    assert logs[0]["id"] == ids[6]
    assert all("at" in entry for entry in logs)


async def test_snapshot_log_does_not_touch_progress_fields(client) -> None:
    await publish(client, "lg", "progress", {"percent": 12, "message": "working"})
    await publish(client, "lg", "log", {"message": "a log line"})
    snapshot = await (await client.get("/v1/jobs/lg")).json()
    assert (snapshot["percent"], snapshot["message"]) == (12, "working")


async def test_snapshot_eta_needs_three_points_then_is_positive(client) -> None:
    # Tiny steps make the estimate large however fast the requests are.
    await publish(client, "eta", "progress", {"percent": 0})
    assert (await (await client.get("/v1/jobs/eta")).json())["eta_seconds"] is None
    await publish(client, "eta", "progress", {"percent": 0.001})
    assert (await (await client.get("/v1/jobs/eta")).json())["eta_seconds"] is None
    await publish(client, "eta", "progress", {"percent": 0.002})
    eta = (await (await client.get("/v1/jobs/eta")).json())["eta_seconds"]
    assert isinstance(eta, float) and eta > 0
    await publish(client, "eta", "log", {"message": "no percent"})
    assert (await (await client.get("/v1/jobs/eta")).json())["eta_seconds"] == eta


async def test_live_progress_carries_the_snapshots_eta(client, open_stream) -> None:
    """One ETA: each progress frame carries the eta_seconds the snapshot got from that event
    (the publisher's own when it sent one), so a live reader shows what a snapshot reader does;
    history holds the same data."""
    async with open_stream("/v1/jobs/one-eta/stream") as (_, reader):
        steps: list[dict[str, Any]] = [
            {"percent": 0},
            {"percent": 0.001},
            {"percent": 0.002},  # tiny steps: a large estimate however fast the requests are
            {"message": "no percent: the estimate stays"},
            {"percent": 0.003, "eta_seconds": 42},  # the publisher's own wins
            {"percent": 0.004},  # then the relay's again
            {"percent": 100},
        ]
        shown: list[Any] = []
        for data in steps:
            await publish(client, "one-eta", "progress", data)
            [frame] = await reader.events(1)
            assert frame.event == "progress"
            snapshot = await (await client.get("/v1/jobs/one-eta")).json()
            live = frame.json
            assert live.get("eta_seconds") == snapshot["eta_seconds"]
            assert {k: v for k, v in live.items() if k != "eta_seconds"} == {
                k: v for k, v in data.items() if k != "eta_seconds"
            }
            shown.append(snapshot["eta_seconds"])
        await publish(client, "one-eta", "complete")
        [end] = await reader.events(1)
        assert end.event == "complete" and "eta_seconds" not in end.json
    assert shown[:2] == [None, None]
    assert isinstance(shown[2], float) and shown[2] > 0
    assert shown[3] == shown[2] and shown[4] == 42 and shown[6] == 0
    assert isinstance(shown[5], float) and shown[5] != 42
    assert (await (await client.get("/v1/jobs/one-eta")).json())["eta_seconds"] is None
    history = await (await client.get("/v1/jobs/one-eta/events")).json()
    etas = [event["data"].get("eta_seconds") for event in history["events"][:-1]]
    assert etas == shown
    assert "eta_seconds" not in history["events"][-1]["data"]  # complete: no time left


async def test_a_publishers_eta_must_be_a_number_of_seconds(client) -> None:
    response = await client.post(
        "/v1/jobs/bad-eta/events", json={"event": "progress", "data": {"eta_seconds": -1}}
    )
    assert response.status == 422
    assert "$.data.eta_seconds" in (await response.json())["error"]["message"]


async def test_snapshot_counts_open_streams(client) -> None:
    await publish(client, "sub", "progress", {"percent": 1})
    assert (await (await client.get("/v1/jobs/sub")).json())["subscribers"] == 0
    opener = stream_opener(client)
    async with opener("/v1/jobs/sub/stream") as (_, first):
        await first.events(1)
        assert (await (await client.get("/v1/jobs/sub")).json())["subscribers"] == 1
        async with opener("/v1/jobs/sub/stream") as (_, second):
            await second.events(1)
            assert (await (await client.get("/v1/jobs/sub")).json())["subscribers"] == 2
    # The server notices a closed stream on its own time: poll, with a generous bound.
    async with asyncio.timeout(10):
        for _ in range(10_000):
            if (await (await client.get("/v1/jobs/sub")).json())["subscribers"] == 0:
                break
            await asyncio.sleep(0.02)


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_reaches_snapshot_stream_and_publisher(client, open_stream) -> None:
    await publish(client, "k", "progress", {"percent": 10})
    async with open_stream("/v1/jobs/k/stream") as (_, reader):
        await reader.events(1)
        response = await client.post("/v1/jobs/k/cancel")
        assert response.status == 202, await response.text()
        assert (await response.json())["cancel_requested"] is True
        [frame] = await reader.events(1)
        assert frame.event == "cancel_requested"
        assert frame.id is not None
        snapshot = await (await client.get("/v1/jobs/k")).json()
        assert snapshot["cancel_requested"] is True
        assert snapshot["status"] == "running"
        response = await client.post(
            "/v1/jobs/k/events", json={"event": "progress", "data": {"percent": 20}}
        )
        assert response.status == 200
        body = await response.json()
        assert body["cancel_requested"] is True
        [live] = await reader.events(1)
        assert (live.id, live.event) == (body["ids"][0], "progress")
        assert seqs([frame.id, live.id]) == sorted(seqs([frame.id, live.id]))
        last = await publish(client, "k", "cancelled", {"message": "ok, stopping"})
        frames = await reader.until_end()
    assert [(f.id, f.event) for f in frames] == [(last, "cancelled")]
    assert (await (await client.get("/v1/jobs/k")).json())["status"] == "cancelled"


async def test_cancel_twice_is_still_202_with_one_event(client, open_stream) -> None:
    await publish(client, "k2", "progress", {"percent": 10})
    async with open_stream("/v1/jobs/k2/stream") as (_, reader):
        await reader.events(1)
        assert (await client.post("/v1/jobs/k2/cancel")).status == 202
        assert (await client.post("/v1/jobs/k2/cancel")).status == 202
        marker = await publish(client, "k2", "log", {"message": "marker"})
        frames = await reader.events(2)
    assert [f.event for f in frames] == ["cancel_requested", "log"]
    assert frames[1].id == marker


async def test_cancel_unknown_is_404_and_finished_is_409(client) -> None:
    await error_of(await client.post("/v1/jobs/nobody/cancel"), 404, "job_not_found")
    assert (await client.get("/v1/jobs/nobody")).status == 404
    await publish(client, "fin", "complete", {})
    await error_of(await client.post("/v1/jobs/fin/cancel"), 409, "job_finished")
    assert (await (await client.get("/v1/jobs/fin")).json())["cancel_requested"] is False


# --- delete -----------------------------------------------------------------------------------


async def test_delete_removes_the_job_and_ends_its_streams(client, open_stream) -> None:
    await publish(client, "d", "progress", {"percent": 10})
    await publish(client, "keep", "progress", {"percent": 10})
    async with open_stream("/v1/jobs/d/stream") as (_, reader):
        await reader.events(1)
        response = await client.delete("/v1/jobs/d")
        assert response.status == 204
        assert await response.read() == b""
        await reader.until_end(timeout=10)
        assert reader.eof
    await error_of(await client.get("/v1/jobs/d"), 404, "job_not_found")
    await error_of(await client.get("/v1/jobs/d/events"), 404, "job_not_found")
    assert (await client.get("/v1/jobs/keep")).status == 200
    await error_of(await client.delete("/v1/jobs/d"), 404, "job_not_found")


async def test_delete_unknown_is_404(client) -> None:
    await error_of(await client.delete("/v1/jobs/never"), 404, "job_not_found")


# --- history ----------------------------------------------------------------------------------


async def test_history_lists_events(client) -> None:
    events = [("progress", {"percent": 10}), ("log", {"message": "m"}), ("x.y", [1, "a"])]
    ids = await publish_many(client, "h", events)
    body = await (await client.get("/v1/jobs/h/events")).json()
    assert [(e["id"], e["event"], e["data"]) for e in body["events"]] == [
        (i, name, data) for i, (name, data) in zip(ids, events, strict=True)
    ]
    assert body["has_more"] is False
    assert body["truncated"] is False
    assert body["next_after"] == ids[-1]
    after = await (await client.get(f"/v1/jobs/h/events?after={ids[0]}")).json()
    assert [e["id"] for e in after["events"]] == ids[1:]
    tail = await (await client.get(f"/v1/jobs/h/events?after={ids[-1]}")).json()
    assert tail["events"] == [] and tail["has_more"] is False
    assert tail["next_after"] == ids[-1]


async def test_history_pages_with_next_after_return_every_event_once(client) -> None:
    ids = await publish_many(client, "pg", [("progress", {"percent": p}) for p in range(23)])
    await publish(client, "noise", "log", {"message": "another job"})
    seen: list[str] = []
    after = ""
    for _ in range(10):
        body = await (await client.get(f"/v1/jobs/pg/events?limit=5&after={after}")).json()
        seen.extend(e["id"] for e in body["events"])
        assert len(body["events"]) <= 5
        if not body["has_more"]:
            break
        assert len(body["events"]) == 5
        after = body["next_after"]
    assert seen == ids


async def test_history_truncated_when_ring_no_longer_reaches_back(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"ring_events": 5})
    ids = await publish_many(client, "r", [("progress", {"percent": p}) for p in range(10)])
    old = await (await client.get(f"/v1/jobs/r/events?after={ids[1]}")).json()
    assert old["truncated"] is True
    assert [e["id"] for e in old["events"]] == ids[5:]
    whole = await (await client.get("/v1/jobs/r/events")).json()
    assert whole["truncated"] is True
    assert [e["id"] for e in whole["events"]] == ids[5:]
    recent = await (await client.get(f"/v1/jobs/r/events?after={ids[4]}")).json()
    assert recent["truncated"] is False
    assert [e["id"] for e in recent["events"]] == ids[5:]


@pytest.mark.memory_only  # instances on one Redis share an epoch
async def test_history_after_an_id_of_another_epoch_is_truncated(
    make_client: MakeClient,
) -> None:
    before = await make_client()
    old = await publish(before, "ep", "progress", {"percent": 1})
    after = await make_client()
    new = await publish(after, "ep", "progress", {"percent": 2})
    body = await (await after.get(f"/v1/jobs/ep/events?after={old}")).json()
    assert body["truncated"] is True
    assert [e["id"] for e in body["events"]] == [new]


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", "1.5"])
async def test_history_bad_limit_is_400(client, limit: str) -> None:
    await publish(client, "bl", "progress", {"percent": 1})
    response = await client.get(f"/v1/jobs/bl/events?limit={limit}")
    message = await error_of(response, 400, "invalid_parameter")
    assert "limit" in message


@pytest.mark.parametrize("after", ["x", "abc-", "-5", "AB-1", "a-01", "a-1-2"])
async def test_history_malformed_after_is_400(client, after: str) -> None:
    await publish(client, "ba", "progress", {"percent": 1})
    response = await client.get("/v1/jobs/ba/events", params={"after": after})
    message = await error_of(response, 400, "invalid_parameter")
    assert "after" in message


async def test_history_limits_at_bounds(client) -> None:
    ids = await publish_many(client, "lb", [("progress", {"percent": p}) for p in range(3)])
    one = await (await client.get("/v1/jobs/lb/events?limit=1")).json()
    assert [e["id"] for e in one["events"]] == ids[:1] and one["has_more"] is True
    full = await (await client.get("/v1/jobs/lb/events?limit=1000")).json()
    assert [e["id"] for e in full["events"]] == ids and full["has_more"] is False


async def test_history_of_unknown_job_is_404(client) -> None:
    await error_of(await client.get("/v1/jobs/zz/events"), 404, "job_not_found")


# --- ops --------------------------------------------------------------------------------------


async def test_healthz_and_readyz(client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_unknown_route_is_json_404(client) -> None:
    message = await error_of(await client.get("/v2/anything"), 404, "not_found")
    assert "/v2/anything" in message
