"""Groups through the SDK (sync and asyncio) and ``progress-relay watch``, against real relay
processes on both brokers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from progress_relay.client import AsyncRelay, JobState, Relay
from tests.support.client_support import RunningRelay, job_id, own_relay, shared_relay

__all__ = ["own_relay", "shared_relay"]  # fixtures


@pytest.fixture
def relay(shared_relay: RunningRelay) -> Iterator[Relay]:
    with Relay(shared_relay.url, retry_budget=10) as client:
        yield client


def test_group_creates_the_parent_with_its_children(relay: Relay) -> None:
    names = [job_id() for _ in range(3)]
    group = relay.group(names, weights=[1, 2, 1])
    assert [child.id for child in group.children] == names
    assert group.stream_url.endswith(f"/v1/jobs/{group.id}/stream?children=true")
    parent = relay.snapshot(group.id)
    assert parent["group"]["children"] == names
    assert relay.snapshot(names[1])["weight"] == 2
    again = relay.group(5)
    assert len(again.children) == 5
    child = relay.create_job(job_id(), parent=again.id, weight=0.5)
    assert relay.snapshot(again.id)["group"]["children"][-1] == child.id
    with pytest.raises(ValueError, match="weights"):
        relay.group(2, weights=[1])


def test_track_group_gives_a_tracker_per_part_and_the_parent_ends(relay: Relay) -> None:
    tracked = relay.track_group(3, stages=["read", "write"])
    assert len(tracked) == 3
    for number, part in enumerate(tracked):
        with contextlib.suppress(RuntimeError), part:
            part.stage("read")
            part.progress(0.5)
            if number == 2:
                raise RuntimeError("bad file")
    parent = relay.snapshot(tracked.id)
    assert parent["status"] == "failed"
    assert parent["error"]["details"] == {"failed": [tracked.parts[2].job_id]}
    assert parent["group"]["counts"] == {
        "pending": 0,
        "running": 0,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
    }


def test_a_group_stream_folds_into_the_parents_state_with_its_parts(relay: Relay) -> None:
    group = relay.group(2)
    first, second = (child.id for child in group.children)
    relay.progress(first, 50)
    relay.flush()
    state = JobState.from_snapshot(relay.snapshot(group.id))
    assert set(state.children) == {first, second}
    relay.complete(first)
    relay.complete(second)
    live = JobState(group.id)
    for event in relay.subscribe(group.id, children=True, replay="snapshot"):
        live.apply(event)
    assert (live.status, live.percent) == ("completed", 100)
    assert live.children[first].status == live.children[second].status == "completed"
    assert live.group is not None and live.group["counts"]["completed"] == 2


async def test_the_asyncio_client_tracks_a_group(shared_relay: RunningRelay) -> None:
    async with AsyncRelay(shared_relay.url, retry_budget=10) as relay:
        tracked = await relay.track_group([job_id(), job_id()], weights=[3, 1])

        async def work(part: object) -> None:
            async with part:  # type: ignore[attr-defined]
                await part.progress(0.5)  # type: ignore[attr-defined]

        await asyncio.gather(*(work(part) for part in tracked))
        events = [event async for event in relay.subscribe(tracked.id, children=True)]
        assert events[-1].job == tracked.id
        assert events[-1].event == "complete"
        assert {event.job for event in events} == {tracked.id, *(p.job_id for p in tracked)}


def test_watch_draws_a_group_with_its_parts(relay: Relay, shared_relay: RunningRelay) -> None:
    group = relay.group(2)
    first, second = (child.id for child in group.children)
    relay.progress(first, 40)
    relay.flush()
    relay.complete(first)
    relay.fail(second, "bad file")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESS_RELAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "progress_relay", "watch", group.id, "--url", shared_relay.url],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    assert f"   part  {first}  completed  100%" in lines
    assert f"   part  {second}  failed    0%  bad file" in lines
    assert lines[-1] == "failed: 1 of 2 failed (child_failed)"


async def test_a_group_stream_takes_up_a_child_created_while_it_is_read(
    shared_relay: RunningRelay,
) -> None:
    async with AsyncRelay(shared_relay.url, retry_budget=10) as relay:
        group = await relay.group([job_id()])
        (first,) = (child.id for child in group.children)
        await relay.progress(first, 10)
        await relay.flush()
        state = JobState(group.id)
        stream = relay.subscribe(group.id, children=True, replay="snapshot")
        async for event in stream:
            state.apply(event)
            break  # the group's reset: the stream is open
        late = await relay.create_job(job_id(), parent=group.id)
        await relay.progress(late.id, 60)
        await relay.complete(late.id)
        await relay.complete(first)
        await relay.flush()
        async for event in stream:
            state.apply(event)
    assert list(state.children) == [first, late.id]
    assert state.children[late.id].status == "completed"
    assert (state.status, state.percent) == ("completed", 100)
