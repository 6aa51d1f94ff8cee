"""The SDK's sans-IO core: stage arithmetic, coalescing, retries, requests, SSE parsing."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from progress_relay.client import Cancelled, JobNotFound, RateLimited, RelayUnavailable, StageTable
from progress_relay.client import events as ev
from progress_relay.client.coalesce import Coalescer
from progress_relay.client.protocol import Calls, Done, Wait, read_error
from progress_relay.client.retry import RetryPolicy, parse_retry_after
from progress_relay.client.sse import End, Open, SSEDecoder, StreamSession
from progress_relay.client.tracking import TrackState


def test_equal_stage_shares() -> None:
    table = StageTable(["upload", "transcribe", "summarize", "index"])
    assert [table.range(name) for name in table.names] == [
        (0, 25),
        (25, 50),
        (50, 75),
        (75, 100),
    ]
    assert table.percent("transcribe", 0.5) == 37.5
    assert table.percent("index", 7) == 100  # clamped
    assert table.step("summarize") == 3


def test_explicit_end_percentages_like_a_stage_table() -> None:
    # The RAG seed's table: parsing 10 %, resolving 20 %, ..., finalizing 90 %, then done.
    table = StageTable({"parsing": 10, "resolving": 20, "searching": 45, "finalizing": 90})
    assert table.start("searching") == 20
    assert table.percent("searching", 0.2) == 25
    assert table.range("finalizing") == (45, 90)


@pytest.mark.parametrize(
    ("stages", "problem"),
    [
        ({"a": 50, "b": 40}, "must rise"),
        ({"a": 120}, "must rise"),
        ([], "at least one"),
        (["a", "a"], "unique"),
    ],
)
def test_bad_stage_tables_are_refused(stages: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        StageTable(stages)  # type: ignore[arg-type]


def test_an_unknown_stage_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown stage 'x'; the stages are \['a', 'b'\]"):
        StageTable(["a", "b"]).start("x")


def test_coalescer_holds_the_newest_until_the_interval_is_over() -> None:
    coalescer = Coalescer(10)
    first, second, third = ev.progress(1), ev.progress(2), ev.progress(3)
    assert coalescer.offer("j", first, 0.0) is first
    assert coalescer.offer("j", second, 0.01) is None
    assert coalescer.offer("j", third, 0.05) is None  # replaces the held one
    assert coalescer.due("j") == pytest.approx(0.1)
    assert coalescer.take_due("j", 0.09) is None
    assert coalescer.take_due("j", 0.1) is third
    assert coalescer.due("j") is None
    # The next one waits for a whole interval after the flush.
    assert coalescer.offer("j", ev.progress(4), 0.15) is None
    assert coalescer.next_due() == pytest.approx(0.2)
    assert coalescer.held_jobs() == ["j"]
    coalescer.forget("j")
    assert coalescer.held_jobs() == []


def test_coalescing_is_per_job_and_can_be_off() -> None:
    coalescer = Coalescer(10)
    assert coalescer.offer("a", ev.progress(1), 0.0) is not None
    assert coalescer.offer("b", ev.progress(1), 0.0) is not None
    off = Coalescer(0)
    assert all(off.offer("a", ev.progress(i), 0.0) is not None for i in range(5))


def test_backoff_doubles_with_jitter_within_the_budget() -> None:
    policy = RetryPolicy(budget=3.0, first_delay=0.1, max_delay=1.0, jitter=random.Random(7))
    attempts = policy.start(0.0)
    delays = [attempts.next_delay(0.0) for _ in range(5)]
    for delay, ceiling in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0], strict=True):
        assert delay is not None and ceiling / 2 <= delay <= ceiling
    assert attempts.next_delay(2.5) is None  # 2.5 s spent: the next wait would pass 3 s
    assert policy.start(0.0).next_delay(0.0, retry_after=2.0) == 2.0
    assert policy.start(0.0).next_delay(0.0, retry_after=5.0) is None


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert parse_retry_after(None) is None


def test_every_event_keeps_its_key_on_every_attempt() -> None:
    calls = Calls("http://relay:8080/")
    log = ev.log("x")
    call = calls.publish("j1", [log])
    body = json.loads(call.request.body or b"")
    assert body == {"event": "log", "data": {"message": "x", "level": "info"}, "key": log.key}
    call.begin(RetryPolicy(budget=10), 0.0)
    assert isinstance(call.failed("ConnectError", 0.0), Wait)
    assert isinstance(call.answered(503, b"{}", "0.1", 0.1), Wait)
    # Nothing is rebuilt between attempts: the same bytes, the same key.
    assert json.loads(call.request.body or b"")["key"] == log.key
    assert ev.log("x").key != log.key
    batch = calls.publish("j1", [ev.progress(5), ev.complete()])
    items = json.loads(batch.request.body or b"")["events"]
    assert [item["event"] for item in items] == ["progress", "complete"]
    assert all(len(item["key"]) == 32 for item in items)


def test_answers_become_values_or_typed_errors() -> None:
    calls = Calls("http://relay:8080")
    call = calls.snapshot("nope")
    call.begin(RetryPolicy(), 0.0)
    body = b'{"error":{"code":"job_not_found","message":"no job nope"}}'
    with pytest.raises(JobNotFound) as missing:
        call.answered(404, body, None, 0.0)
    assert (missing.value.status, missing.value.code, missing.value.message) == (
        404,
        "job_not_found",
        "no job nope",
    )
    created = calls.create_job(None, None, None)
    created.begin(RetryPolicy(), 0.0)
    chosen = json.loads(created.request.body or b"")["id"]
    answer = json.dumps({"id": chosen, "stream_url": f"/v1/jobs/{chosen}/stream",
                         "status_url": f"/v1/jobs/{chosen}"}).encode()  # fmt: skip
    done = created.answered(201, answer, None, 0.0)
    assert isinstance(done, Done)
    assert done.value.stream_url == f"http://relay:8080/v1/jobs/{chosen}/stream"


def test_giving_up_says_what_and_why() -> None:
    call = Calls("http://relay:8080").publish("j1", [ev.log("x")])
    call.begin(RetryPolicy(budget=1.0, first_delay=0.4, max_delay=0.4), 0.0)
    assert isinstance(call.failed("ConnectError: refused", 0.0), Wait)
    with pytest.raises(RelayUnavailable) as down:
        call.failed("ConnectError: refused", 0.9)
    assert str(down.value).startswith(
        "unreachable: publish log to job j1 (relay http://relay:8080): gave up after 2"
    )
    assert "ConnectError: refused" in str(down.value)
    limited = Calls("http://relay:8080").publish("j1", [ev.log("x")])
    limited.begin(RetryPolicy(budget=1.0), 0.0)
    with pytest.raises(RateLimited):
        limited.answered(429, b'{"error":{"code":"rate_limited","message":"slow"}}', "5", 0.0)


def test_error_bodies_of_other_shapes() -> None:
    assert read_error(502, b"<html>Bad Gateway</html>") == ("http_502", "<html>Bad Gateway</html>")
    assert read_error(409, b'{"error":"job_finished","message":"done"}') == (
        "job_finished",
        "done",
    )


def test_sse_decoder_across_chunk_boundaries_and_line_ends() -> None:
    decoder = SSEDecoder()
    stream = (
        b'retry: 3000\n\n: ping\n\nid: e-1\r\nevent: progress\r\ndata: {"percent":'
        b"5}\r\n\r\nid: e-2\revent: log\rdata: line one\rdata: line two\r\revent: reset\n"
        b"data: {}\n\n"
    )
    messages = []
    for i in range(len(stream)):  # one byte at a time: every boundary is a chunk boundary
        messages.extend(decoder.feed(stream[i : i + 1]))
    assert [(m.id, m.event, m.data) for m in messages] == [
        ("e-1", "progress", '{"percent":5}'),
        ("e-2", "log", "line one\nline two"),
        (None, "reset", "{}"),
    ]
    assert decoder.retry_ms == 3000


def test_stream_session_resumes_and_ends() -> None:
    session = StreamSession("j1", "e-3", RetryPolicy(), 0.0)
    assert session.headers()["Last-Event-ID"] == "e-3"
    assert isinstance(session.opened(200, b"", None, 0.0), Open)
    events = session.feed(b'retry: 2000\n\nid: e-4\nevent: log\ndata: {"message":"m"}\n\n', 0)
    assert [(e.id, e.event, e.data, e.job) for e in events] == [
        ("e-4", "log", {"message": "m"}, "j1")
    ]
    assert session.last_event_id == "e-4" and not session.done
    wait = session.ended(1.0)  # cut before the terminal event: reconnect after `retry:`
    assert isinstance(wait, Wait) and wait.delay == 2.0
    assert session.headers()["Last-Event-ID"] == "e-4"
    assert isinstance(session.opened(503, b"{}", "1", 1.0), Wait)
    assert isinstance(session.opened(200, b"", None, 2.0), Open)
    session.feed(b"id: e-5\nevent: complete\ndata: {}\n\nid: e-6\nevent: log\ndata: {}\n\n", 2.0)
    assert session.done and session.last_event_id == "e-5"
    assert isinstance(StreamSession("j", "e", RetryPolicy(), 0).opened(204, b"", None, 0), End)
    finished = StreamSession("j", None, RetryPolicy(), 0.0)
    finished.opened(200, b"", None, 0.0)
    finished.feed(b'event: reset\ndata: {"status":"completed"}\n\n', 0.0)
    assert finished.done


def test_tracker_state_decides_the_end() -> None:
    state = TrackState("j", ["a", "b"])
    assert state.advance(0.5, None, None, None).data == {
        "percent": 25,
        "stage": "a",
        "step": 1,
        "total_steps": 2,
    }
    assert state.enter("b", "B").data["percent"] == 50
    state.result = {"r": 1}
    complete, suppress = state.exit_event(None)
    assert (complete and complete.event, complete and complete.data, suppress) == (
        "complete",
        {"result": {"r": 1}},
        False,
    )
    cancelled, suppress = state.exit_event(Cancelled("j", "stop"))
    assert (cancelled and cancelled.data, suppress) == ({"message": "stop"}, True)
    failed, suppress = state.exit_event(OSError("disk"))
    assert (failed and failed.data, suppress) == ({"message": "disk", "code": "OSError"}, False)
    aborted, suppress = state.exit_event(asyncio.CancelledError())
    assert (aborted and aborted.event, suppress) == ("cancelled", False)
    state.ended(ev.complete())
    assert state.exit_event(None) == (None, False)
    without_stages = TrackState("j", None)
    assert without_stages.advance(0.42, "m", 3, 7).data == {
        "percent": 42,
        "message": "m",
        "step": 3,
        "total_steps": 7,
    }
