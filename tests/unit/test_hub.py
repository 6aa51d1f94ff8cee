"""The Hub's hand-over with a broker whose reads take time, as a networked broker's do.

With the memory broker, attaching and reading the replay happen without a pause in between, so
the race cannot show over HTTP. Here the broker yields to the event loop inside every read, and
hypothesis chooses how publishes interleave with a subscriber's connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from progress_relay.brokers.base import Replay
from progress_relay.brokers.memory import MemoryBroker
from progress_relay.config import JobSettings
from progress_relay.core.hub import Hub
from progress_relay.wire.events import Draft, make_draft
from progress_relay.wire.snapshot import Snapshot
from tests.support.app import make_settings
from tests.support.sse_client import parse_frame


class SlowReadBroker(MemoryBroker):
    """The memory broker, with every read suspending ``pauses`` times before it answers."""

    def __init__(self, settings: JobSettings, pauses: int) -> None:
        super().__init__(settings)
        self.pauses = pauses

    async def _pause(self) -> None:
        for _ in range(self.pauses):
            await asyncio.sleep(0)

    async def replay(self, job_id: str, after: int) -> Replay | None:
        await self._pause()
        return await super().replay(job_id, after)

    async def replays(self, reads: Sequence[tuple[str, int | None]]) -> list[Replay | None]:
        await self._pause()
        return await super().replays(reads)

    async def snapshot(self, job_id: str) -> Snapshot | None:
        await self._pause()
        return await super().snapshot(job_id)

    async def watch(self, job_id: str) -> None:
        await self._pause()


def progress(step: int) -> Draft:
    return make_draft("progress", b'{"step":%d}' % step, "$", 1024)


async def _scenario(
    batches: list[int], pauses: int, connect_at: int, resume_at: int | None, ring: int
) -> tuple[list[str], list[str | None], str | None]:
    relay_settings = make_settings(jobs={"ring_events": ring})
    broker = SlowReadBroker(relay_settings.jobs, pauses)
    hub = Hub(broker, relay_settings)
    published: list[str] = []
    reached = asyncio.Event()

    async def publisher() -> None:
        step = 0
        for number, size in enumerate(batches):
            result = await broker.publish("job", [progress(step + i) for i in range(size)])
            published.extend(event.id for event in result.events)
            step += size
            if number == connect_at:
                reached.set()
            await asyncio.sleep(0)
        reached.set()
        result = await broker.publish("job", [make_draft("complete", b"{}", "$", 1024)])
        published.extend(event.id for event in result.events)

    task = asyncio.create_task(publisher())
    await reached.wait()
    last = published[min(resume_at, len(published) - 1)] if resume_at is not None else None
    subscriber = await hub.open(["job"], last, "history", multi=False)
    if subscriber is None:
        # 204 is right only for a client that has already seen the terminal event.
        await task
        assert last == published[-1]
        return [], [], None
    chunks = b""
    while (chunk := await subscriber.next_chunk()) is not None:
        chunks += chunk
    hub.close(subscriber)
    await task
    frames = [parse_frame(raw + b"\n\n") for raw in chunks.split(b"\n\n") if raw]
    assert frames[0].retry == 3000
    events = [frame for frame in frames[1:]]
    if last is not None:
        published = published[published.index(last) + 1 :]
    first_name = events[0].event if events else None
    return published, [frame.id for frame in events], first_name


def _run(
    batches: list[int], pauses: int, connect_at: int, resume_at: int | None, ring: int
) -> tuple[list[str], list[str | None], str | None]:
    # A stream that never ends is a failure hypothesis can shrink, not a hung test run.
    scenario = _scenario(batches, pauses, connect_at, resume_at, ring)
    return asyncio.run(asyncio.wait_for(scenario, 10))


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.integers(1, 40), min_size=5, max_size=40),
    pauses=st.integers(0, 6),
    connect_at=st.integers(0, 30),
    resume_at=st.one_of(st.none(), st.integers(0, 1500)),
)
def test_replay_and_live_hand_over_exactly_once(
    batches: list[int], pauses: int, connect_at: int, resume_at: int | None
) -> None:
    published, received, _ = _run(batches, pauses, connect_at, resume_at, ring=5000)
    assert received == published


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.integers(1, 40), min_size=5, max_size=40),
    pauses=st.integers(0, 6),
    connect_at=st.integers(0, 30),
    resume_at=st.one_of(st.none(), st.integers(0, 1500)),
)
def test_with_a_small_ring_every_event_once_or_an_explicit_reset(
    batches: list[int], pauses: int, connect_at: int, resume_at: int | None
) -> None:
    published, received, first = _run(batches, pauses, connect_at, resume_at, ring=20)
    if first == "reset":
        position = received[0]
        assert position in published
        assert received[1:] == published[published.index(position) + 1 :]
    else:
        assert received == published
