"""Groups in the SDK: ``relay.group(children=...)`` creates a parent with its children in one
call, ``relay.track_group(...)`` also gives a tracker per child. The relay aggregates the
children into the parent (its percent, counts and end: docs/api.md, "Groups"); a worker only
publishes to the children."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from progress_relay.client.protocol import Job

T = TypeVar("T")

Children = int | Sequence[str]


def child_specs(children: Children, weights: Sequence[float] | None) -> list[dict[str, Any]]:
    """The ``children`` of the create body: ``children`` a count (random ids, chosen here so
    that a retried create makes no second set) or the ids; ``weights`` one per child."""
    if isinstance(children, int):
        if children < 1:
            raise ValueError("a group has at least one child")
        ids = [uuid.uuid4().hex for _ in range(children)]
    else:
        ids = list(children)
    if weights is not None and len(weights) != len(ids):
        raise ValueError(f"weights has {len(weights)} values for {len(ids)} children")
    specs: list[dict[str, Any]] = [{"id": child_id} for child_id in ids]
    for spec, weight in zip(specs, weights or (), strict=False):
        spec["weight"] = weight
    return specs


@dataclass(frozen=True)
class Group:
    """A parent job (``job``: its links, its ``stream_url`` the group's stream) and its
    ``children``, in order."""

    job: Job
    children: tuple[Job, ...]

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def stream_url(self) -> str:
        """The group's stream: the parent's and every child's events (``?children=true``)."""
        return f"{self.job.stream_url}?children=true"


@dataclass(frozen=True)
class GroupTracker(Generic[T]):
    """A group with a tracker per child (``parts``, in the children's order); iterate it for
    the parts. Each part is a ``with`` (or ``async with``) block of its own."""

    group: Group
    parts: tuple[T, ...]

    @property
    def id(self) -> str:
        return self.group.id

    def __iter__(self) -> Iterator[T]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)
