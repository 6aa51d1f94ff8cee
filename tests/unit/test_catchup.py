"""Every resume rule (core/catchup.py), table-driven: each row of the table "Resume" in
docs/api.md is a case here, and the test fails when the two tables differ."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from progress_relay.brokers import Replay
from progress_relay.core import catchup
from progress_relay.core.catchup import JobCatchUp, ReplayMode
from progress_relay.wire.errors import InvalidParameter
from progress_relay.wire.events import Event
from progress_relay.wire.ids import Position
from progress_relay.wire.snapshot import Snapshot, new_snapshot, with_content

EPOCH = "kx1"
OTHER_EPOCH = "zz9"
API = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def event(seq: int, name: str = "progress", job: str = "j") -> Event:
    return Event(job, seq, str(Position(EPOCH, seq)), name, b"{}")


def snapshot(status: str = "running", job: str = "j") -> Snapshot:
    """A job's snapshot as a broker reads it for one job: with its streamed text."""
    return with_content(msgspec.structs.replace(new_snapshot(job), status=status), "", False)


# The job's side of each row: what the broker's read of it returns, given where the read starts
# (``after``; None: only the snapshot). A job with events 1..5, of which history retains those
# after ``kept_after``.
@dataclass(frozen=True)
class Job:
    exists: bool = True
    finished: bool = False
    kept_after: int = 0  # history holds the events after this seq
    newest: int = 5

    def read(self, after: int | None, job: str = "j") -> Replay | None:
        if not self.exists:
            return None
        last = "complete" if self.finished else "progress"
        snap = snapshot("completed" if self.finished else "running", job)
        if after is None:
            return Replay(snap, [], False, self.newest)
        start = max(after, self.kept_after)
        events = [
            event(seq, last if seq == self.newest else "progress", job)
            for seq in range(start + 1, self.newest + 1)
        ]
        return Replay(snap, events, after >= self.kept_after, self.newest)


CURRENT_ID = str(Position(EPOCH, 2))
# (last id, mode) per "last id" cell of the table
READERS: dict[str, list[tuple[str | None, ReplayMode]]] = {
    "an id of the current epoch": [(CURRENT_ID, "history"), (CURRENT_ID, "none")],
    "another epoch (relay restarted) or not an id of this relay": [
        (str(Position(OTHER_EPOCH, 2)), "history"),
        ("not-an-id", "history"),
    ],
    "another epoch or not an id of this relay": [
        (str(Position(OTHER_EPOCH, 2)), "history"),
        ("not-an-id", "snapshot"),
    ],
    "none, `replay=history` (default)": [(None, "history"), ("", "history")],
    "none, `replay=history`": [(None, "history")],
    "none, `replay=snapshot`": [(None, "snapshot")],
    "none, `replay=none`": [(None, "none")],
}

# The table of docs/api.md: (last id, job) -> what the stream sends, as an outcome here:
# "events" (exactly the events after the id / all retained ones), "reset" (with the snapshot
# and its position), "reset, no id" (a fresh pending snapshot, no id line, then waits),
# "wait" (nothing now, live events only), "204".
ROWS: dict[tuple[str, str], tuple[list[Job], str]] = {
    ("an id of the current epoch", "retained history holds every event after it"): (
        [Job(kept_after=1), Job(kept_after=2, finished=True)],
        "events",
    ),
    (
        "an id of the current epoch",
        "events after it are no longer retained (ring of `jobs.ring_events` / `jobs.ring_bytes`)",
    ): ([Job(kept_after=3)], "reset"),
    ("an id of the current epoch", "finished, and the id is at or past its terminal event"): (
        [Job(finished=True, newest=2), Job(finished=True, newest=1)],
        "204",
    ),
    ("an id of the current epoch", "does not exist (never did, deleted, evicted)"): (
        [Job(exists=False)],
        "204",
    ),
    ("another epoch (relay restarted) or not an id of this relay", "exists"): (
        [Job(), Job(finished=True)],
        "reset",
    ),
    ("another epoch or not an id of this relay", "does not exist"): (
        [Job(exists=False)],
        "reset, no id",
    ),
    ("none, `replay=history` (default)", "exists, history complete from its first event"): (
        [Job(), Job(finished=True)],
        "events",
    ),
    ("none, `replay=history`", "exists, its first events no longer retained"): (
        [Job(kept_after=1)],
        "reset",
    ),
    ("none, `replay=history`", "does not exist"): ([Job(exists=False)], "wait"),
    ("none, `replay=snapshot`", "exists"): ([Job(), Job(finished=True)], "reset"),
    ("none, `replay=snapshot`", "does not exist"): ([Job(exists=False)], "reset, no id"),
    ("none, `replay=none`", "running or pending, or does not exist"): (
        [Job(), Job(exists=False)],
        "wait",
    ),
    ("none, `replay=none`", "finished"): ([Job(finished=True)], "204"),
}


def documented_rows() -> set[tuple[str, str]]:
    text = API.read_text()
    section = text[text.index("## Resume") : text.index("### The `reset` event")]
    rows = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("last id", "---"):
            rows.add((cells[0], cells[1]))
    return rows


def test_every_row_of_the_documented_table_is_tested() -> None:
    assert documented_rows() == set(ROWS)


def outcome(part: JobCatchUp | None) -> str:
    if part is None:
        return "204"
    if part.reset:
        frame = catchup.reset_frame(part, EPOCH, 0, multi=False, with_id=True)
        if part.replay is None:
            assert not frame.startswith(b"id:")
            data = msgspec.json.decode(frame.split(b"data: ", 1)[1])
            assert data["status"] == "pending"
            return "reset, no id"
        assert frame.startswith(f"id: {Position(EPOCH, part.seq)}\n".encode())
        return "reset"
    return "events" if part.events else "wait"


@pytest.mark.parametrize("row", list(ROWS), ids=lambda row: f"{row[0]} | {row[1]}")
def test_resume_table(row: tuple[str, str]) -> None:
    jobs, expected = ROWS[row]
    for last_id, mode in READERS[row[0]]:
        for job in jobs:
            resume = catchup.resume_from(last_id, EPOCH, mode)
            replay = job.read(resume.after)
            part = catchup.plan("j", replay, resume)
            assert outcome(part) == expected, (last_id, mode, job)
            if expected == "events":
                assert part is not None
                after = resume.position.seq if resume.position else 0
                assert [e.seq for e in part.events] == list(range(after + 1, job.newest + 1))
            if part is not None and part.finished:
                # what is sent reaches the terminal event (or its reset): the stream then ends
                assert expected in ("events", "reset")


def test_the_last_id_is_read_against_the_epoch() -> None:
    assert catchup.resume_from(None, EPOCH).after == 0
    assert catchup.resume_from(None, EPOCH, "snapshot").after is None
    assert catchup.resume_from(None, EPOCH, "none").after is None
    assert catchup.resume_from("kx1-7", EPOCH, "none").after == 7
    foreign = catchup.resume_from("zz9-7", EPOCH)
    assert foreign.foreign and foreign.position is None and foreign.after is None
    assert catchup.resume_from("7", EPOCH).foreign  # not an id of this relay


def test_resets_go_first_and_pull_in_every_job_with_an_event_at_or_below_them() -> None:
    """Rule 3: a stream's last id promises every job up to it. Job a is reset at seq 6; job b's
    replay has event 4 below it, so b is reset too (at 8, which pulls in c with event 7); d's
    events are all above 8 and are replayed. Only the last reset carries an id."""
    a = JobCatchUp("a", Replay(snapshot(job="a"), [], False, 6), reset=True)
    b = JobCatchUp(
        "b", Replay(snapshot(job="b"), [event(4, job="b"), event(8, job="b")], True, 8), reset=False
    )
    c = JobCatchUp("c", Replay(snapshot(job="c"), [event(7, job="c")], True, 7), reset=False)
    d = JobCatchUp(
        "d",
        Replay(snapshot(job="d"), [event(9, job="d"), event(10, job="d")], True, 10),
        reset=False,
    )
    resets, events = catchup.arrange([d, c, b, a])
    assert [part.job_id for part in resets] == ["a", "c", "b"]
    assert [e.seq for e in events] == [9, 10]
    reset_frames, event_frames = catchup.frames(resets, events, EPOCH, lambda job: 0, multi=True)
    assert [frame.startswith(b"id:") for frame in reset_frames] == [False, False, True]
    assert reset_frames[-1].startswith(f"id: {Position(EPOCH, 8)}\n".encode())
    assert event_frames == [e.job_frame for e in events]


def test_without_resets_events_go_in_id_order_across_jobs() -> None:
    x = JobCatchUp(
        "x", Replay(snapshot(job="x"), [event(1, job="x"), event(4, job="x")], True, 4), reset=False
    )
    y = JobCatchUp(
        "y", Replay(snapshot(job="y"), [event(2, job="y"), event(3, job="y")], True, 3), reset=False
    )
    resets, events = catchup.arrange([x, y])
    assert resets == []
    assert [(e.job_id, e.seq) for e in events] == [("x", 1), ("y", 2), ("y", 3), ("x", 4)]


def test_a_reset_carries_the_subscriber_count_and_wraps_on_multi_job_streams() -> None:
    part = JobCatchUp("j", Replay(snapshot(), [], False, 3), reset=True)
    frame = catchup.reset_frame(part, EPOCH, 4, multi=True, with_id=True)
    head, data = frame.split(b"data: ", 1)
    assert head == f"id: {EPOCH}-3\nevent: reset\n".encode()
    wrapped = msgspec.json.decode(data)
    assert wrapped["job"] == "j" and wrapped["data"]["subscribers"] == 4
    assert (wrapped["data"]["content"], wrapped["data"]["content_truncated"]) == ("", False)


def test_a_reset_carries_the_text_and_refuses_a_snapshot_read_without_it() -> None:
    def data(part: JobCatchUp) -> Any:
        frame = catchup.reset_frame(part, EPOCH, 0, multi=False, with_id=True)
        return msgspec.json.decode(frame.split(b"data: ", 1)[1])

    texty = with_content(snapshot(), "Hello \u00e9", True)
    sent = data(JobCatchUp("j", Replay(texty, [], False, 3), reset=True))
    assert (sent["content"], sent["content_truncated"]) == ("Hello \u00e9", True)
    # A job the broker does not have: a fresh pending snapshot, with no text.
    assert data(JobCatchUp("n", None, reset=True))["content"] == ""
    bare = JobCatchUp("j", Replay(new_snapshot("j"), [], False, 3), reset=True)
    with pytest.raises(RuntimeError, match="the replay of job j for a reset has no text"):
        catchup.reset_frame(bare, EPOCH, 0, multi=False, with_id=True)


@pytest.mark.parametrize(
    ("lost", "job", "expected"),
    [
        (True, Job(), "reset"),  # history lost: a new life of the job, its snapshot
        (True, Job(exists=False), "reset, no id"),  # not published again yet
        (False, Job(kept_after=1), "events"),  # the missed events
        (False, Job(kept_after=3), "reset"),  # out of reach
        (False, Job(exists=False), "gone"),  # the sweep ends the stream
    ],
)
def test_resync_after_an_interruption(lost: bool, job: Job, expected: str) -> None:
    replay = job.read(None if lost else 2)
    part = catchup.plan_resync("j", replay, lost)
    assert (outcome(part) if part is not None else "gone") == expected


def test_history_reads_after_an_id_of_this_epoch_and_flags_a_foreign_one_truncated() -> None:
    complete = Job(kept_after=0).read(0)
    partial = Job(kept_after=2).read(0)
    assert complete is not None and partial is not None
    assert catchup.history_after(None, EPOCH) == catchup.HistoryRead(0, False)
    assert catchup.history_after("kx1-3", EPOCH) == catchup.HistoryRead(3, False)
    foreign = catchup.history_after("zz9-3", EPOCH)
    assert foreign == catchup.HistoryRead(0, True)
    assert foreign.truncated(complete)
    assert not catchup.history_after(None, EPOCH).truncated(complete)
    assert catchup.history_after(None, EPOCH).truncated(partial)
    with pytest.raises(InvalidParameter, match="`after` is not an event id of this relay"):
        catchup.history_after("nope", EPOCH)


@pytest.mark.parametrize(
    ("seqs", "expected_id"),
    [((4, 2, 7), str(Position(EPOCH, 7))), ((0, 0, 0), None), ((3, 0, 1), str(Position(EPOCH, 3)))],
)
def test_rule_4_a_group_is_reset_as_one_frame(
    seqs: tuple[int, int, int], expected_id: str | None
) -> None:
    """The parent's snapshot with every child's (their text left out), the id the newest
    position among them; a child the broker does not have yet is a fresh pending one."""
    parent = with_content(
        msgspec.structs.replace(new_snapshot("p"), status="running"), "parent text", False
    )
    child = with_content(new_snapshot("c1"), "child text", False)
    parts = [
        JobCatchUp("p", Replay(parent, [], False, seqs[0]), reset=True),
        JobCatchUp("c1", Replay(child, [], False, seqs[1]), reset=True),
        JobCatchUp("c2", None if seqs[2] == 0 else Replay(child, [], False, seqs[2]), reset=True),
    ]
    counts = {"p": 2, "c1": 1}
    frame = catchup.group_reset_frame(parts, EPOCH, lambda job: counts.get(job, 0))
    lines = frame.decode().split("\n")
    assert (f"id: {expected_id}" in lines) is (expected_id is not None)
    assert "event: reset" in lines
    data = msgspec.json.decode(next(line[6:] for line in lines if line.startswith("data: ")))
    assert data["job"] == "p"
    assert (data["data"]["content"], data["data"]["subscribers"]) == ("parent text", 2)
    assert [c["id"] for c in data["children"]] == ["c1", "c1" if seqs[2] else "c2"]
    assert all("content" not in c for c in data["children"])
