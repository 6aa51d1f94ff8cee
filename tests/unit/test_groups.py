"""core/groups.py: a parent's aggregate of its children and the events the relay publishes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from progress_relay.core import groups
from progress_relay.wire.snapshot import GroupCounts, Snapshot, new_snapshot


def child(
    job: str, status: str = "running", percent: float | None = None, **extra: Any
) -> Snapshot:
    return msgspec.structs.replace(new_snapshot(job), status=status, percent=percent, **extra)


def test_percent_is_the_weighted_mean_completed_100_and_none_0() -> None:
    found = groups.aggregate(
        ["a", "b", "c", "d"],
        [
            child("a", percent=50, weight=2.0),
            child("b", "completed", percent=30),  # a completed child counts 100
            child("c", "pending"),  # no percent: 0
            None,  # gone: pending, weight 1
        ],
    )
    assert found.percent == round((50 * 2 + 100) / 5, 1)
    assert found.group.counts == GroupCounts(pending=2, running=1, completed=1)
    assert (found.group.total, found.group.children) == (4, ["a", "b", "c", "d"])


def test_eta_is_the_largest_of_the_running_childrens() -> None:
    found = groups.aggregate(
        ["a", "b", "c"],
        [
            child("a", eta_seconds=5.0),
            child("b", eta_seconds=12.5),
            child("c", "completed", eta_seconds=99.0),
        ],
    )
    assert found.eta_seconds == 12.5
    assert groups.aggregate(["a"], [child("a")]).eta_seconds is None


@pytest.mark.parametrize(
    ("statuses", "terminal", "fields"),
    [
        (("completed", "completed"), "complete", {"result": {"children": 2}}),
        (
            ("completed", "failed"),
            "failed",
            {"code": "child_failed", "details": {"failed": ["b"]}},
        ),
        (("cancelled", "failed"), "failed", {"code": "child_failed"}),
        (("completed", "cancelled"), "cancelled", {}),
        (("completed", "running"), None, {}),
    ],
)
def test_the_parent_ends_when_every_child_has(
    statuses: tuple[str, str], terminal: str | None, fields: dict[str, Any]
) -> None:
    found = groups.aggregate(["a", "b"], [child("a", statuses[0]), child("b", statuses[1])])
    drafts = groups.events(found)
    progress = msgspec.json.decode(drafts[0].data)
    assert drafts[0].name == "progress"
    assert progress["group"]["total"] == 2
    done = sum(s != "running" for s in statuses)
    assert progress["message"] == f"{done} of 2 done"
    if terminal is None:
        assert len(drafts) == 1
        return
    assert drafts[1].name == terminal
    data = msgspec.json.decode(drafts[1].data)
    assert fields.items() <= data.items()


def test_changed_by_a_status_or_the_rounded_percent_only() -> None:
    parent = new_snapshot("p")
    first = groups.aggregate(["a"], [child("a", percent=10.2)])
    assert groups.changed(parent, first)  # no group yet
    parent.group, parent.percent = first.group, first.percent
    assert not groups.changed(parent, groups.aggregate(["a"], [child("a", percent=10.4)]))
    assert groups.changed(parent, groups.aggregate(["a"], [child("a", percent=11)]))
    assert groups.changed(parent, groups.aggregate(["a"], [child("a", "completed")]))
    parent.status = "completed"  # ended by its publisher: only its group can change
    assert not groups.changed(parent, groups.aggregate(["a"], [child("a", percent=50)]))
