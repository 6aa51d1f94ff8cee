"""The snapshot of a job: the ETA estimate and the effect of each kind of event."""

from __future__ import annotations

import pytest
from msgspec import UNSET

from progress_relay.wire.content import ContentTail
from progress_relay.wire.events import Draft, make_draft
from progress_relay.wire.snapshot import EtaEstimator, JobError, Snapshot, apply, new_snapshot


def draft(name: str, data: bytes = b"{}") -> Draft:
    return make_draft(name, data, "$", 65536)


def applied(
    *drafts: Draft,
    tail: int = 20,
    snapshot: Snapshot | None = None,
    content: ContentTail | None = None,
) -> Snapshot:
    snapshot = snapshot or new_snapshot("j")
    eta = EtaEstimator()
    content = content or ContentTail(1 << 20)
    for index, item in enumerate(drafts, start=1):
        apply(snapshot, item, f"e-{index}", eta, tail, content)
    return snapshot


# --- EtaEstimator ---------------------------------------------------------------------------


def test_eta_is_none_until_three_points() -> None:
    eta = EtaEstimator()
    assert eta.add(10, at=0.0) is None
    assert eta.add(20, at=10.0) is None
    assert eta.add(30, at=20.0) == 70.0  # 1 %/s, 70 % left


def test_eta_uses_the_rate_over_the_window() -> None:
    eta = EtaEstimator()
    eta.add(0, at=100.0)
    eta.add(10, at=101.0)
    assert eta.add(40, at=104.0) == pytest.approx(6.0)  # 10 %/s, 60 % left


def test_eta_resets_when_progress_goes_back() -> None:
    eta = EtaEstimator()
    for index, percent in enumerate((10, 20, 30, 40)):
        eta.add(percent, at=float(index))
    assert eta.add(5, at=10.0) is None  # a new phase: the old rate says nothing
    assert eta.add(6, at=11.0) is None
    assert eta.add(7, at=12.0) == 93.0


def test_eta_is_zero_at_100() -> None:
    assert EtaEstimator().add(100, at=0.0) == 0.0
    eta = EtaEstimator()
    eta.add(10, at=0.0)
    eta.add(20, at=1.0)
    assert eta.add(100, at=2.0) == 0.0


def test_eta_none_when_progress_stalls() -> None:
    eta = EtaEstimator()
    for at in (0.0, 1.0, 2.0, 3.0):
        assert eta.add(50, at=at) is None


def test_eta_none_when_no_time_passed() -> None:
    eta = EtaEstimator()
    for percent in (10, 20, 30):
        result = eta.add(percent, at=5.0)
    assert result is None


def test_eta_forgets_points_older_than_the_window() -> None:
    eta = EtaEstimator()
    eta.add(0, at=0.0)
    eta.add(1, at=1000.0)  # a very slow start
    result = None
    for k in range(10):  # then 1 %/s
        result = eta.add(2 + k, at=1001.0 + k)
    # Only the last 10 points count: from (2 %, 1001 s) to (11 %, 1010 s).
    assert result == pytest.approx((100 - 11) * 9 / 9)


def test_eta_is_positive_and_rounded() -> None:
    eta = EtaEstimator()
    eta.add(0, at=0.0)
    eta.add(30, at=1.0)
    result = eta.add(60, at=2.0)
    assert result == pytest.approx(1.3)
    assert result is not None and round(result, 1) == result


# --- apply ----------------------------------------------------------------------------------


def test_new_snapshot_is_pending() -> None:
    snapshot = new_snapshot("j", meta={"a": 1})
    assert (snapshot.id, snapshot.status, snapshot.meta) == ("j", "pending", {"a": 1})
    assert snapshot.created_at == snapshot.updated_at
    assert snapshot.last_event_id is None
    assert not snapshot.finished


def test_progress_updates_fields_and_runs() -> None:
    snapshot = applied(
        draft(
            "progress",
            b'{"percent":40,"stage":"s","message":"m","step":2,"total_steps":5,"x":1}',
        )
    )
    assert snapshot.status == "running"
    assert (snapshot.percent, snapshot.stage, snapshot.message) == (40, "s", "m")
    assert (snapshot.step, snapshot.total_steps) == (2, 5)
    assert snapshot.last_event_id == "e-1"
    assert snapshot.updated_at >= snapshot.created_at
    assert snapshot.eta_seconds is None


def test_partial_progress_keeps_other_fields() -> None:
    snapshot = applied(
        draft("progress", b'{"percent":40,"stage":"s","message":"m"}'),
        draft("progress", b'{"stage":"t"}'),
    )
    assert (snapshot.percent, snapshot.stage, snapshot.message) == (40, "t", "m")
    assert snapshot.last_event_id == "e-2"


def test_eta_appears_after_three_progress_points() -> None:
    snapshot = new_snapshot("j")
    eta = EtaEstimator()
    for index, percent in enumerate((0.0, 0.001, 0.002)):
        data = b'{"percent":%r}' % percent
        apply(snapshot, draft("progress", data), f"e-{index}", eta, 20, ContentTail(8))
        if index < 2:
            assert snapshot.eta_seconds is None
    assert snapshot.eta_seconds is not None and snapshot.eta_seconds > 0


def test_log_appends_and_keeps_the_tail() -> None:
    drafts = [draft("log", b'{"message":"m%d","level":"warning"}' % i) for i in range(5)]
    snapshot = applied(*drafts, tail=3)
    assert [entry.message for entry in snapshot.logs] == ["m2", "m3", "m4"]
    assert [entry.id for entry in snapshot.logs] == ["e-3", "e-4", "e-5"]
    assert {entry.level for entry in snapshot.logs} == {"warning"}
    assert snapshot.status == "running"
    assert snapshot.message is None


def test_log_level_defaults_to_info() -> None:
    [entry] = applied(draft("log", b'{"message":"m"}')).logs
    assert entry.level == "info"


def test_content_marks_running_and_joins_the_text() -> None:
    content = ContentTail(1 << 20)
    snapshot = applied(
        draft("content", b'{"text":"tok"}'),
        draft("log", b'{"message":"m"}'),
        draft("content", b'{"text":"en \\u00e9"}'),
        content=content,
    )
    assert snapshot.status == "running"
    assert snapshot.last_event_id == "e-3"
    assert (snapshot.percent, snapshot.message) == (None, None)
    assert content.view() == ("token \u00e9", False)
    # The snapshot a broker keeps has no text; readers get it through with_content.
    assert snapshot.content is UNSET


def test_custom_event_only_marks_running() -> None:
    snapshot = applied(draft("chart.ready", b"[1,2]"))
    assert snapshot.status == "running"
    assert snapshot.percent is None and snapshot.last_event_id == "e-1"


def test_complete() -> None:
    snapshot = applied(
        draft("progress", b'{"percent":10,"message":"working"}'),
        draft("complete", b'{"result":{"n":1},"message":"done","redirect_url":"/r"}'),
    )
    assert snapshot.status == "completed" and snapshot.finished
    assert (snapshot.percent, snapshot.result, snapshot.redirect_url) == (100, {"n": 1}, "/r")
    assert snapshot.message == "done"
    assert snapshot.eta_seconds is None


def test_complete_without_message_keeps_the_last_one() -> None:
    snapshot = applied(draft("progress", b'{"message":"working"}'), draft("complete"))
    assert (snapshot.status, snapshot.message, snapshot.result) == ("completed", "working", None)


def test_failed() -> None:
    snapshot = applied(
        draft("progress", b'{"percent":30}'),
        draft("failed", b'{"message":"boom","code":"E1","details":[1]}'),
    )
    assert snapshot.status == "failed" and snapshot.finished
    assert snapshot.error == JobError("boom", "E1", [1])
    assert snapshot.message == "boom"
    assert snapshot.percent == 30
    assert snapshot.eta_seconds is None


def test_cancelled() -> None:
    snapshot = applied(draft("cancelled", b'{"message":"stopped"}'))
    assert (snapshot.status, snapshot.message) == ("cancelled", "stopped")
    assert snapshot.finished
    assert applied(draft("cancelled")).message is None


def test_cancel_requested_keeps_a_pending_job_pending() -> None:
    item = Draft("cancel_requested", b'{"cancel_requested":true}', None)
    snapshot = applied(item)
    assert snapshot.cancel_requested is True
    assert snapshot.status == "pending"
    assert snapshot.last_event_id == "e-1"


def test_cancel_requested_on_a_running_job() -> None:
    item = Draft("cancel_requested", b'{"cancel_requested":true}', None)
    snapshot = applied(draft("progress", b'{"percent":5}'), item)
    assert (snapshot.status, snapshot.cancel_requested, snapshot.percent) == ("running", True, 5)
