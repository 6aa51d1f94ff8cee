"""The Broker: where ids, history and snapshots live. The Hub and the handlers only see this."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from progress_relay.brokers.outbox import Outbox
from progress_relay.config import JobSettings
from progress_relay.wire.errors import RelayError, TooManyJobs
from progress_relay.wire.events import Draft, Event
from progress_relay.wire.snapshot import Snapshot
from progress_relay.wire.webhooks import JobWebhook

Listener = Callable[[str, Sequence[Event]], None]
# Called after live delivery was interrupted (a lost connection to a shared broker), with the jobs
# watched; ``reset`` when history itself was lost (a new epoch). Live events are held until it
# returns, so it can catch subscribers up from history without a gap.
Resync = Callable[[list[str], bool], Awaitable[None]]


class Published(NamedTuple):
    """``ids`` has one id per draft, in order: a draft whose idempotency key was already seen
    gets the id it was published with then, and is not in ``events`` (the events published
    now)."""

    events: list[Event]
    ids: list[str]
    cancel_requested: bool
    parent: str | None = None  # the job's parent (core/groups.py), when it has one


class Replay(NamedTuple):
    """What a (re)connecting subscriber of one job needs, read in one step.

    ``events`` are the retained events after the requested position; ``complete`` says whether
    they are all of them (if not, a stream sends ``reset`` with ``snapshot`` instead). ``seq`` is
    the position ``snapshot`` reflects: the seq of the job's newest event, 0 before the first.
    """

    snapshot: Snapshot
    events: list[Event]
    complete: bool
    seq: int


class JobPage(NamedTuple):
    """Jobs newest first; ``before`` is where the next page starts (None: no more jobs)."""

    snapshots: list[Snapshot]
    before: int | None


class MemoryUse(NamedTuple):
    """Bytes the broker holds for jobs against its bound (``limit`` 0: none set), and how many
    finished jobs' histories it dropped to stay within it."""

    held: int
    limit: int
    histories_dropped: int


class Expired(NamedTuple):
    job_id: str
    status: str


def too_many_jobs(settings: JobSettings) -> TooManyJobs:
    """What either broker answers to a new job past ``jobs.max_jobs``: come back when finished
    jobs have had time to be evicted."""
    return TooManyJobs(
        f"the relay holds its maximum of {settings.max_jobs} jobs",
        headers={"Retry-After": str(int(settings.finished_ttl))},
    )


class Broker(Protocol):
    """Contract of every broker.

    - ``seq`` is one sequence for the deployment: ids grow strictly in publish order across jobs.
    - Assigning ids, appending to history, updating the snapshot and handing the events to the
      listener is one atomic step per publish: a subscriber that registered before ``replay``
      sees every event either in the replay or live (the Hub drops the overlap by ``seq``).
    - Publishing never waits on a subscriber: the listener must not block.
    - ``epoch`` changes whenever history is lost, so old ids can be told apart.
    """

    @property
    def epoch(self) -> str: ...

    def set_listener(self, listener: Listener) -> None:
        """Receives the events of every job that has local subscribers, in publish order."""

    def set_resync(self, resync: Resync) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Returns when the broker answers; raises BrokerUnavailable otherwise."""

    async def create(
        self, job_id: str, *, ttl: float | None, meta: Any, webhook: JobWebhook | None = None
    ) -> tuple[Snapshot, bool]:
        """The job's snapshot, and whether this call created it (creating is idempotent; an
        existing job keeps the ``webhook`` it was created with)."""

    @property
    def outbox(self) -> Outbox | None:
        """Webhook deliveries (None: webhooks are off). Publishing puts the events a job's
        receiver asked for into it in the same atomic step as the rest of the publish."""
        ...

    async def publish(self, job_id: str, drafts: Sequence[Draft]) -> Published:
        """Append events to a job (creating it if unknown). JobFinished after a terminal event,
        unless every draft's idempotency key was seen: a retry gets its original ids even then.
        Checking the keys and appending is one atomic step, so two concurrent retries of the
        same key publish it once."""

    async def write_group(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Set a job's group fields of its snapshot (``parent``, ``weight``, ``group``: the Hub
        decides them, core/groups.py); nothing for an unknown job. A ``group`` with fewer
        finished children than the one stored is not written (False): finished children stay
        finished, so it was read before another instance's newer one, which must not be undone
        (the parent's terminal event would carry the older counts)."""
        return True

    async def snapshots(self, job_ids: Sequence[str]) -> list[Snapshot | None]:
        """The snapshots of ``job_ids`` (None: unknown), without their streamed text or history:
        what an aggregate over many jobs reads (core/groups.py)."""
        replays = await self.replays([(job_id, None) for job_id in job_ids])
        return [None if replay is None else replay.snapshot for replay in replays]

    async def keep_children(self, parent_id: str, children: Sequence[str]) -> None:
        """A group goes as one: the children live at least as long as their parent (a broker
        whose keys expire on their own extends theirs to the parent's)."""

    async def publish_many(
        self, batches: Sequence[tuple[str, Sequence[Draft]]]
    ) -> list[Published | RelayError]:
        """``publish`` of several jobs in one call (one round trip to a networked broker), in
        order: each job's drafts are atomic and in order as ``publish`` makes them; a job
        refused (finished, no room, ...) has its error in its place and does not stop the
        others. An error raised (the broker unreachable) is the whole call's."""

    async def request_cancel(self, job_id: str) -> tuple[Snapshot, Event | None]:
        """Mark a job's cancellation as requested; the event is None when it already was."""

    async def snapshot(self, job_id: str) -> Snapshot | None: ...

    async def replay(self, job_id: str, after: int) -> Replay | None:
        """Events after seq ``after`` (0: from the first); None for an unknown job."""

    async def replays(self, reads: Sequence[tuple[str, int | None]]) -> list[Replay | None]:
        """``replay`` of several jobs read at one instant (``after`` None: only the snapshot).
        One instant, because a stream of several jobs must send ids in rising order: reads
        at different moments could each miss what another instance published in between."""

    async def delete(self, job_id: str) -> Snapshot | None:
        """Drop a job and its history; its snapshot as it was, or None if it did not exist."""

    async def jobs(self, statuses: frozenset[str], limit: int, before: int | None) -> JobPage:
        """Up to ``limit`` jobs created before position ``before`` (None: the newest), newest
        first, of the given statuses (empty: all). A page may hold fewer than ``limit`` when
        a broker bounds the work of one call; only ``before`` None means the end."""

    async def existing(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs exist (the others were never created, expired or were deleted)."""

    async def job_counts(self) -> dict[str, int]:
        """How many jobs there are by status (for /metrics)."""
        ...

    async def memory(self) -> MemoryUse:
        """What the broker holds against its memory bound (for /metrics): the memory broker's
        own count (``limits.memory_bytes``), or Redis's ``used_memory`` and ``maxmemory``."""
        ...

    async def reserve_seq(self) -> int:
        """A fresh seq of this epoch, for a frame the service itself makes (such as the `failed`
        that ends a stream of an evicted job), so ids stay strictly increasing on every stream."""

    async def watch(self, job_id: str) -> None:
        """The first local subscriber of ``job_id`` arrived: from when this returns, deliver the
        job's events to the listener (the Hub reads the replay only after that)."""

    def unwatch(self, job_id: str) -> None:
        """The last local subscriber of ``job_id`` left. Must not block: a networked broker
        completes this on its own task."""

    def count_subscribers(self, job_id: str, count: int) -> None:
        """This instance now has ``count`` open streams of ``job_id`` (called on every attach and
        detach). Must not block, and stays cheap: a networked broker coalesces the changes and
        writes them on its own task."""

    async def subscribers(self, job_ids: Sequence[str], local: Sequence[int]) -> list[int]:
        """Open streams of each job across every instance, ``local`` being this instance's own
        (exact, where what it shared may lag). The memory broker answers ``local``. A shared
        broker stops counting a dead instance's streams within a bound
        (``broker.instance_ttl``)."""


@runtime_checkable
class Expiring(Protocol):
    """A broker whose jobs' lifetimes the relay itself must end (the memory broker). Redis
    expires its keys on its own; the reaper then only ends the streams of jobs that have gone."""

    async def expired(self) -> list[Expired]:
        """Jobs whose lifetime is over, not yet removed (the reaper deletes each)."""
        ...
