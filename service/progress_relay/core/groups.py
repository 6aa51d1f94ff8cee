"""Groups: a parent job whose state is the aggregate of its children's.

The rules (docs/api.md, "Groups"), as pure functions the Hub applies after every publish to a
child: the parent's ``group`` (children, counts by status, failed ids), its percent (the
children's percents weighted, a completed child 100, one without a percent 0), its ETA (the
largest of the running children's), and the event the relay publishes on the parent when any of
that changes: a `progress`, or the terminal event once every child has finished."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from progress_relay.wire.events import Draft, make_draft
from progress_relay.wire.snapshot import Group, GroupCounts, Snapshot

_encode = msgspec.json.Encoder().encode
# The relay's own events are small; the bound only guards make_draft's check.
_EVENT_BYTES = 1 << 30


class Aggregate(NamedTuple):
    group: Group
    percent: float
    eta_seconds: float | None


def aggregate(children: Sequence[str], snapshots: Sequence[Snapshot | None]) -> Aggregate:
    """The parent's aggregate from its children's snapshots (None: a child that has gone, which
    counts as pending until the group goes as one)."""
    counts = GroupCounts()
    failed: list[str] = []
    weighted = 0.0
    weights = 0.0
    eta: float | None = None
    for child_id, snapshot in zip(children, snapshots, strict=True):
        status = "pending" if snapshot is None else snapshot.status
        setattr(counts, status, getattr(counts, status) + 1)
        if snapshot is None:
            weights += 1.0
            continue
        weight = 1.0 if isinstance(snapshot.weight, msgspec.UnsetType) else snapshot.weight
        weights += weight
        if status == "completed":
            weighted += 100 * weight
        elif snapshot.percent is not None:
            weighted += float(snapshot.percent) * weight
        if status == "failed":
            failed.append(child_id)
        if status == "running" and snapshot.eta_seconds is not None:
            eta = snapshot.eta_seconds if eta is None else max(eta, snapshot.eta_seconds)
    percent = round(weighted / weights, 1) if weights else 0.0
    group = Group(list(children), counts, len(children), failed)
    return Aggregate(group, percent, eta)


def _finished(counts: GroupCounts) -> int:
    return counts.completed + counts.failed + counts.cancelled


def changed(parent: Snapshot, new: Aggregate) -> bool:
    """Whether the parent needs its group written and an event: a child's status or the rounded
    percent changed (a finished parent: only its group)."""
    old = parent.group
    if isinstance(old, msgspec.UnsetType) or old != new.group:
        return True
    return not parent.finished and round(parent.percent or 0) != round(new.percent)


def events(new: Aggregate) -> list[Draft]:
    """What the relay publishes on the parent: its `progress`, then its end once every child
    has finished (`failed` when any failed, else `cancelled` when any was, else `complete`)."""
    group = new.group
    counts = group.counts
    body: dict[str, Any] = {
        "percent": new.percent,
        "eta_seconds": new.eta_seconds,
        "message": f"{_finished(counts)} of {group.total} done",
        "group": {"counts": counts, "total": group.total, "failed": group.failed},
    }
    drafts = [_draft("progress", body)]
    if group.total and _finished(counts) == group.total:
        if counts.failed:
            message = f"{counts.failed} of {group.total} failed"
            details = {"failed": group.failed}
            drafts.append(
                _draft("failed", {"message": message, "code": "child_failed", "details": details})
            )
        elif counts.cancelled:
            drafts.append(_draft("cancelled", {"message": f"{counts.cancelled} cancelled"}))
        else:
            drafts.append(_draft("complete", {"result": {"children": group.total}}))
    return drafts


def _draft(name: str, body: dict[str, Any]) -> Draft:
    return make_draft(name, _encode(body), "$", _EVENT_BYTES)
