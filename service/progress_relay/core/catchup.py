"""Every resume rule, as pure functions: what a (re)connecting reader of a job gets.

Used alike by a stream's open (``Hub.open``), by the catch-up after live delivery from a shared
broker was interrupted (``Hub.catch_up``) and by the history endpoint. The rules, row by row, are
the table "Resume" in docs/api.md; tests/unit/test_catchup.py checks every row.

1. The last id (``Last-Event-ID``, else ``?last_event_id=``) is read against the broker's epoch
   (``resume_from``). An id of another epoch, or not an id of this relay, is older than anything
   retained ("foreign"): the reader gets a ``reset``.
2. Per job (``plan``): with an id of this epoch, the events after it if history still holds them
   all, else a ``reset``; nothing at all (204) when the job is gone or the id is at or past its
   terminal event. Without an id, the ``replay`` mode decides: ``history`` (all retained events,
   or ``reset`` if they no longer start at the first), ``snapshot`` (a ``reset``), ``none``
   (nothing, or 204 for a finished job).
3. Across the jobs of one stream (``arrange``): a stream's last id promises that every event of
   every job up to it was sent, as an event or reflected in a ``reset``; a client resumes from
   that id alone. Events in id order keep the promise. A ``reset`` of job J reflects J up to the
   moment its replay was read, past every replayed event, so resets go first; but J's newest seq
   as an id would promise the other jobs up to that seq too. So every job with a replayed event
   at or below it is reset as well, and only the last ``reset`` carries an id (``frames``). A
   client cut off among the resets keeps its old id and gets them again.
4. A group's stream (``/v1/jobs/{parent}/stream?children=true``): when rule 3 resets any job of
   the group, the whole group is reset in one frame (``group_reset_frame``): the parent's
   snapshot with every child's, all read at one instant, so no replayed event follows it and
   its id, the newest seq among them, promises exactly what it carries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec
from msgspec import UnsetType

from progress_relay.brokers.base import Replay
from progress_relay.wire import sse
from progress_relay.wire.errors import InvalidParameter
from progress_relay.wire.events import Event
from progress_relay.wire.ids import Position, parse_event_id
from progress_relay.wire.snapshot import Snapshot, new_snapshot, with_content, without_content

ReplayMode = Literal["history", "snapshot", "none"]
REPLAY_MODES: tuple[ReplayMode, ...] = ("history", "snapshot", "none")

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a reader says it is: its last id (read against the current epoch) and mode."""

    position: Position | None  # None: no id, or not an id of this relay
    foreign: bool  # an id of another epoch, or not an id of this relay
    mode: ReplayMode

    @property
    def after(self) -> int | None:
        """The seq after which the broker's history is needed (None: only the snapshot)."""
        if self.foreign:
            return None
        if self.position is not None:
            return self.position.seq
        return 0 if self.mode == "history" else None


def resume_from(last_event_id: str | None, epoch: str, mode: ReplayMode = "history") -> Resume:
    """Rule 1: the reader's last id (empty or None: none) against ``epoch``."""
    if not last_event_id:
        return Resume(None, False, mode)
    position = parse_event_id(last_event_id)
    if position is None or position.epoch != epoch:
        return Resume(None, True, mode)
    return Resume(position, False, mode)


@dataclass(slots=True)
class JobCatchUp:
    """What one job's reader gets: its replayed events, or a ``reset`` with its snapshot."""

    job_id: str
    replay: Replay | None  # None: the broker has no such job (yet)
    reset: bool  # the replay cannot reach back far enough: send the snapshot instead

    @property
    def seq(self) -> int:
        return 0 if self.replay is None else self.replay.seq

    @property
    def events(self) -> list[Event]:
        return [] if self.reset or self.replay is None else self.replay.events

    @property
    def finished(self) -> bool:
        """What is sent brings the reader to the job's end: its stream of the job ends after it."""
        return self.replay is not None and self.replay.snapshot.finished


def plan(job_id: str, replay: Replay | None, resume: Resume) -> JobCatchUp | None:
    """Rule 2: what one job's reader needs, or None when nothing more will come (204)."""
    position = resume.position
    if resume.foreign or (resume.mode == "snapshot" and position is None):
        return JobCatchUp(job_id, replay, reset=True)
    if position is not None:
        if replay is None:
            return None  # evicted or deleted
        if replay.snapshot.finished and position.seq >= replay.seq:
            return None  # the reader has seen the terminal event
        return JobCatchUp(job_id, replay, reset=not replay.complete)
    if resume.mode == "history":
        # (replay None: not published yet; the stream waits for it)
        return JobCatchUp(job_id, replay, reset=replay is not None and not replay.complete)
    if replay is not None and replay.snapshot.finished:
        return None
    return JobCatchUp(job_id, replay, reset=False)  # mode "none": from now on


def plan_resync(job_id: str, replay: Replay | None, lost: bool) -> JobCatchUp | None:
    """Rule 2 after live delivery was interrupted, for a stream already following the job:
    ``lost`` when the broker's history itself was lost (a new epoch: a new life of the job,
    its snapshot even if it has none yet); else the events missed since the stream's newest,
    or ``reset`` if history no longer holds them. None: the job has gone (the sweep ends it)."""
    if lost:
        return JobCatchUp(job_id, replay, reset=True)
    if replay is None:
        return None
    return JobCatchUp(job_id, replay, reset=not replay.complete)


def arrange(jobs: Iterable[JobCatchUp]) -> tuple[list[JobCatchUp], list[Event]]:
    """Rule 3: the jobs to reset first (in seq order; only the last frame carries its id), then
    the events to send, in id order."""
    jobs = list(jobs)
    resets = [job for job in jobs if job.reset]
    if resets:
        mark = max(job.seq for job in resets)
        grew = True
        while grew:
            grew = False
            for job in jobs:
                events = job.events
                if events and events[0].seq <= mark:
                    job.reset = True
                    resets.append(job)
                    mark = max(mark, job.seq)
                    grew = True
        resets.sort(key=lambda job: job.seq)
    events = sorted((event for job in jobs for event in job.events), key=lambda e: e.seq)
    return resets, events


def group_reset_frame(
    parts: list[JobCatchUp], epoch: str, subscribers: Callable[[str], int]
) -> bytes:
    """Rule 4: one ``reset`` for a whole group, ``parts`` being the parent then its children:
    data ``{"job": parent, "data": its snapshot, "children": [each child's snapshot, without
    its text]}``, id the newest position among them."""
    parent, *children = parts
    (snapshot,) = _snapshots([parent], subscribers)
    kids = [without_content(child) for child in _snapshots(children, subscribers)]
    data = _encode({"job": parent.job_id, "data": snapshot, "children": kids})
    seq = max(part.seq for part in parts)
    return sse.event_frame(str(Position(epoch, seq)) if seq else None, "reset", data)


def _snapshots(parts: list[JobCatchUp], subscribers: Callable[[str], int]) -> list[Snapshot]:
    found = []
    for part in parts:
        replay = part.replay
        snapshot = (
            with_content(new_snapshot(part.job_id), "", False)
            if replay is None
            else replay.snapshot
        )
        found.append(msgspec.structs.replace(snapshot, subscribers=subscribers(part.job_id)))
    return found


def reset_frame(
    part: JobCatchUp, epoch: str, subscribers: int, *, multi: bool, with_id: bool
) -> bytes:
    """One ``reset``: data is the job's snapshot (a fresh ``pending`` one for a job the broker
    does not have), id the position it reflects; no id line where that would promise more than
    the stream has sent (``with_id`` False), or for a job without events (no position)."""
    replay = part.replay
    snapshot: Snapshot
    if replay is None:
        snapshot, seq = with_content(new_snapshot(part.job_id), "", False), 0
    else:
        snapshot, seq = replay.snapshot, replay.seq
        if isinstance(snapshot.content, UnsetType):
            # A broker may skip the text of a read whose history is complete: it must not.
            raise RuntimeError(f"the replay of job {part.job_id} for a reset has no text")
    data = _encode(msgspec.structs.replace(snapshot, subscribers=subscribers))
    if multi:
        data = sse.job_data(part.job_id, data)
    event_id = str(Position(epoch, seq)) if seq and with_id else None
    return sse.event_frame(event_id, "reset", data)


def frames(
    resets: list[JobCatchUp],
    events: list[Event],
    epoch: str,
    subscribers: Callable[[str], int],
    *,
    multi: bool,
) -> tuple[list[bytes], list[bytes]]:
    """Rule 3 on the wire: the ``reset`` frames (only the last with an id) and the event frames,
    in the order ``arrange`` gave."""
    event_frames = [event.job_frame if multi else event.frame for event in events]
    return reset_frames(resets, epoch, subscribers, multi=multi), event_frames


def reset_frames(
    resets: list[JobCatchUp], epoch: str, subscribers: Callable[[str], int], *, multi: bool
) -> list[bytes]:
    """The ``reset`` frames of ``arrange``'s resets, only the last with an id."""
    last = len(resets)
    return [
        reset_frame(part, epoch, subscribers(part.job_id), multi=multi, with_id=n == last)
        for n, part in enumerate(resets, 1)
    ]


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """The history endpoint's ``after``: the seq to read after, and whether the reader's id was
    of another epoch (older than everything retained, so what it gets is truncated)."""

    seq: int
    foreign: bool

    def truncated(self, replay: Replay) -> bool:
        return self.foreign or not replay.complete


def history_after(after: str | None, epoch: str) -> HistoryRead:
    """Rule 1 for ``GET /v1/jobs/{id}/events?after=``: unlike a stream's last id, an ``after``
    that is not an id of this relay at all is a 400 (it is a parameter, not a browser's memory)."""
    if not after:
        return HistoryRead(0, False)
    position = parse_event_id(after)
    if position is None:
        raise InvalidParameter(f"`after` is not an event id of this relay: {after!r}")
    if position.epoch != epoch:
        return HistoryRead(0, True)
    return HistoryRead(position.seq, False)
