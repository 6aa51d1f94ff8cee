"""One state, however it was reached: for any sequence of events of every kind, the SDK's
``JobState`` folded from live events equals the one loaded from the snapshot
(``GET /v1/jobs/{id}``), from a ``reset`` (``replay=snapshot``), from a fresh stream's history
(a ``reset`` once it outgrows the ring, then live events) and from readers that joined with a
``reset`` at any point of it: through a real relay on both brokers, over HTTP, with the SDK's
own ``AsyncRelay``.

The relay runs with a ring of 4 events, a log tail of 3 and 12 bytes of text, so every example
meets those bounds; the states use the same bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from progress_relay.client import AsyncRelay, JobState
from tests.support.app import MakeClient
from tests.support.properties import PROPERTY, on_loop

LOG_TAIL = 3
CONTENT_BYTES = 12
RELAY = {
    "jobs": {
        "ring_events": 4,
        "log_tail": LOG_TAIL,
        "content_bytes": CONTENT_BYTES,
        "pending_ttl": 600.0,
    }
}

TEXT = st.text(st.characters(codec="utf-8"), max_size=6)
MAYBE_TEXT = st.none() | TEXT
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-1, 1, allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
PERCENT = st.integers(0, 100) | st.floats(0, 100, allow_nan=False)
COUNT = st.integers(0, 10)


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the ones drawn as "absent" (an explicit null stays: it is sent)."""
    return {name: value for name, value in fields.items() if value is not ABSENT}


ABSENT = object()


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(ABSENT) | st.none() | strategy


PROGRESS = st.fixed_dictionaries(
    {
        "percent": maybe(PERCENT),
        "stage": maybe(TEXT),
        "message": maybe(TEXT),
        "step": maybe(COUNT),
        "total_steps": maybe(COUNT),
        "eta_seconds": maybe(st.floats(0, 1e4, allow_nan=False)),
        "extra": maybe(JSON),
    }
).map(lambda fields: ("progress", _present(fields)))
LOG = st.fixed_dictionaries(
    {
        "message": TEXT,
        "level": st.just(ABSENT)
        | st.sampled_from(["debug", "info", "success", "warning", "error"]),
    }
).map(lambda fields: ("log", _present(fields)))
CONTENT = TEXT.map(lambda text: ("content", {"text": text}))
CUSTOM = st.tuples(st.sampled_from(["chart.ready", "tool_call", "x-1"]), JSON)
EVENT = st.one_of(PROGRESS, LOG, CONTENT, CUSTOM)
TERMINAL = st.one_of(
    st.fixed_dictionaries(
        {"result": maybe(JSON), "message": maybe(TEXT), "redirect_url": maybe(TEXT)}
    ).map(lambda fields: ("complete", _present(fields))),
    st.fixed_dictionaries({"message": TEXT, "code": maybe(TEXT), "details": maybe(JSON)}).map(
        lambda fields: ("failed", _present(fields))
    ),
    st.fixed_dictionaries({"message": maybe(TEXT)}).map(
        lambda fields: ("cancelled", _present(fields))
    ),
)


@dataclass(frozen=True)
class Batch:
    events: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Cancel:
    """A viewer's cancel request: the `cancel_requested` event, once."""


@dataclass(frozen=True)
class Join:
    """A reader opens the stream here with ``replay=snapshot``: a `reset`, then live events."""


Step = Batch | Cancel | Join


@st.composite
def programs(draw: st.DrawFn) -> list[Step]:
    step = st.one_of(
        st.lists(EVENT, min_size=1, max_size=4).map(lambda events: Batch(tuple(events))),
        st.just(Cancel()),
        st.just(Join()),
    )
    steps: list[Step] = draw(st.lists(step, max_size=10))
    if draw(st.booleans()):
        before = draw(st.lists(EVENT, max_size=2))
        steps.append(Batch((*before, draw(TERMINAL))))
    return steps


# Past the ring, the log tail and the text's bound, with a reader joining in the middle.
PAST_EVERY_BOUND: list[Step] = [
    Batch(tuple(("log", {"message": f"m{i}", "level": "warning"}) for i in range(4))),
    Batch((("content", {"text": "Gr\u00fc\u00dfe, "}), ("progress", {"percent": 50}))),
    Join(),
    Cancel(),
    Batch((("content", {"text": "\u20ac \U0001f600 end"}), ("log", {"message": "last"}))),
    Batch((("failed", {"message": "boom", "code": "E1"}),)),
]


class Reader:
    """A stream of the job folded into a JobState, from where it was opened."""

    def __init__(self, relay: AsyncRelay, job: str, replay: str, changed: asyncio.Condition):
        self.state = JobState(job, log_tail=LOG_TAIL, content_bytes=CONTENT_BYTES)
        self.resets = 0
        self._changed = changed
        self.task = asyncio.create_task(self._follow(relay, job, replay))

    async def _follow(self, relay: AsyncRelay, job: str, replay: str) -> None:
        async with contextlib.aclosing(relay.subscribe(job, replay=replay)) as events:
            async for event in events:
                self.resets += event.event == "reset"
                self.state.apply(event)
                async with self._changed:
                    self._changed.notify_all()

    async def reached(self, last_event_id: str | None) -> JobState:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.state.last_event_id == last_event_id or self.task.done()
            )
        if self.task.done():
            self.task.result()  # a failure of the stream, raised here
        return self.state

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _attached(client: TestClient[Any, Any], job: str, streams: int) -> None:
    """Until the relay counts ``streams`` open streams of the job (they hold live events): the
    SDK's iterator says nothing until an event comes."""
    snapshot = f"/v1/jobs/{job}"
    while (await (await client.get(snapshot)).json())["subscribers"] < streams:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def _run(client: TestClient[Any, Any], relay: AsyncRelay, steps: list[Step]) -> None:
    job = f"s{uuid.uuid4().hex}"
    await relay.create_job(job)
    changed = asyncio.Condition()
    live = Reader(relay, job, "history", changed)
    readers: list[Reader] = []
    try:
        await _attached(client, job, 1)
        for step in steps:
            if isinstance(step, Batch):
                await relay.batch(job, list(step.events))
            elif isinstance(step, Cancel):
                await relay.cancel(job)
            else:
                readers.append(Reader(relay, job, "snapshot", changed))
        snapshot = await relay.snapshot(job)
        last = snapshot["last_event_id"]
        expected = await live.reached(last)
        assert live.resets == 0, "the live reader got every event live"
        loaded = JobState.from_snapshot(snapshot, log_tail=LOG_TAIL, content_bytes=CONTENT_BYTES)
        assert loaded == expected, "the snapshot's state is the live one"
        readers.append(Reader(relay, job, "snapshot", changed))  # a reset only
        readers.append(Reader(relay, job, "history", changed))  # the history, or a reset
        for reader in readers:
            assert await reader.reached(last) == expected
    finally:
        for reader in (live, *readers):
            await reader.close()


async def test_the_live_state_equals_the_snapshot_and_every_reset(make_client: MakeClient) -> None:
    client = await make_client(**RELAY)
    run = on_loop(asyncio.get_running_loop())
    async with AsyncRelay(str(client.make_url("")), progress_rate=0, retry_budget=5) as relay:

        @settings(PROPERTY, max_examples=40)
        @given(steps=programs())
        @example(steps=PAST_EVERY_BOUND)
        def one_state(steps: list[Step]) -> None:
            run(_run(client, relay, steps))

        await asyncio.to_thread(one_state)
