"""The SDK's JobState (sans-IO): its text keeps the relay's rule, a `reset` replaces everything,
and misuse is refused. That a live state equals the snapshot's, event type by event type, is
checked against a real relay in tests/contract/test_one_state.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progress_relay.client import Event, JobState, LogLine
from progress_relay.wire.content import ContentTail
from tests.support.properties import PROPERTY


def event(name: str, data: Any, event_id: str | None = "e-1", job: str = "j") -> Event:
    return Event(event_id, name, data, job)


@settings(PROPERTY, max_examples=300)
@given(
    bound=st.integers(1, 24),
    pieces=st.lists(st.text(st.characters(codec="utf-8"), max_size=8), max_size=30),
)
def test_the_text_follows_the_relays_rule(bound: int, pieces: list[str]) -> None:
    relay = ContentTail(bound)
    state = JobState("j", content_bytes=bound)
    for index, piece in enumerate(pieces):
        relay.append(piece)
        state.apply(event("content", {"text": piece}, f"e-{index}"))
        assert (state.content, state.content_truncated) == relay.view()
        reloaded = JobState.from_snapshot(
            {"id": "j", "content": state.content, "content_truncated": state.content_truncated},
            content_bytes=bound,
        )
        assert (reloaded.content, reloaded.content_truncated) == relay.view()


def test_a_reset_replaces_the_whole_state_text_included() -> None:
    state = JobState("j", log_tail=2)
    for index, text in enumerate(["Hello ", "wor"]):
        state.apply(event("content", {"text": text}, f"e-{index}"))
    state.apply(event("log", {"message": "old"}, "e-3"))
    snapshot = {
        "id": "j",
        "status": "running",
        "percent": 30,
        "last_event_id": "e-9",
        "logs": [
            {"id": f"e-{i}", "at": "2026-01-01T00:00:00Z", "level": "info", "message": f"m{i}"}
            for i in range(4)
        ],
        "content": "Hello world",
        "content_truncated": False,
        "subscribers": 3,
        "meta": {"user": "u1"},
    }
    state.apply(event("reset", snapshot, "e-9"))
    assert state == JobState.from_snapshot(snapshot, log_tail=2)
    assert (state.percent, state.content, state.last_event_id) == (30, "Hello world", "e-9")
    assert state.logs == [LogLine("e-2", "info", "m2"), LogLine("e-3", "info", "m3")]
    state.apply(event("content", {"text": "!"}, "e-10"))
    assert state.content == "Hello world!"


def test_a_live_failure_sets_the_message_as_the_snapshot_does() -> None:
    state = JobState("j")
    state.apply(event("progress", {"percent": 40, "message": "working", "eta_seconds": 3.5}))
    assert (state.status, state.eta_seconds) == ("running", 3.5)
    state.apply(event("failed", {"message": "boom", "code": "E1"}, "e-2"))
    assert (state.status, state.message, state.eta_seconds) == ("failed", "boom", None)
    assert state.error == {"message": "boom", "code": "E1", "details": None}
    assert state.finished


def test_a_listing_entry_has_no_text() -> None:
    state = JobState.from_snapshot({"id": "j", "status": "running", "percent": 5})
    assert (state.content, state.content_truncated, state.logs) == ("", False, [])


def test_a_parents_state_takes_up_a_child_it_did_not_list() -> None:
    state = JobState.from_snapshot({"id": "p", "status": "running", "group": {"children": ["a"]}})
    state.apply(event("progress", {"percent": 40, "message": "late"}, job="b"))
    assert list(state.children) == ["a", "b"]
    assert (state.children["b"].status, state.children["b"].percent) == ("running", 40)


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="event of job k applied to the state of j"):
        JobState("j").apply(event("progress", {}, job="k"))
    with pytest.raises(ValueError, match="at least 1"):
        JobState("j", log_tail=0)
    assert JobState("j") != {"job": "j"}
    assert "content='Hello'" in repr(JobState.from_snapshot({"id": "j", "content": "Hello"}))
