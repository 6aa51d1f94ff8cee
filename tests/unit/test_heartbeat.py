"""The heartbeat wheel (core/heartbeat.py): one timer for every stream, beaten every interval."""

from __future__ import annotations

import asyncio

from progress_relay.core.heartbeat import PING, SLOTS, Heartbeat

INTERVAL = 0.16  # a turn every 10 ms


class Stream:
    def __init__(self) -> None:
        self.beats: list[bytes] = []
        self.beaten = asyncio.Event()

    def beat(self, frame: bytes) -> None:
        self.beats.append(frame)
        self.beaten.set()


async def beats(stream: Stream, count: int) -> None:
    while len(stream.beats) < count:
        stream.beaten.clear()
        await asyncio.wait_for(stream.beaten.wait(), 5)


async def test_every_stream_is_beaten_again_and_again_with_the_ping_comment() -> None:
    heartbeat = Heartbeat(INTERVAL)
    streams = [Stream() for _ in range(3)]
    for stream in streams:
        heartbeat.add(stream)
    for stream in streams:
        await beats(stream, 3)
        assert set(stream.beats) == {PING}
    heartbeat.close()


async def test_a_discarded_stream_leaves_the_wheel_and_the_last_one_stops_the_timer() -> None:
    heartbeat = Heartbeat(INTERVAL)
    gone, stays = Stream(), Stream()
    heartbeat.add(gone)
    heartbeat.add(stays)
    await beats(gone, 1)
    heartbeat.discard(gone)
    seen = len(gone.beats)
    await beats(stays, len(stays.beats) + 2)
    assert len(gone.beats) == seen
    assert heartbeat.armed
    heartbeat.discard(stays)
    heartbeat.discard(stays)  # twice is harmless
    assert heartbeat.streams == 0
    assert not heartbeat.armed


async def test_a_thousand_streams_share_one_timer_and_each_turn_beats_a_slot_of_them() -> None:
    heartbeat = Heartbeat(3600.0)  # never turns by itself here
    loop = asyncio.get_running_loop()
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    streams = [Stream() for _ in range(1000)]
    for stream in streams:
        heartbeat.add(stream)
    assert heartbeat.streams == 1000
    assert len(loop._scheduled) == timers_before + 1  # type: ignore[attr-defined]
    for _ in range(SLOTS):
        heartbeat._turn()
    assert [len(stream.beats) for stream in streams] == [1] * 1000
    heartbeat.close()
    assert not heartbeat.armed


async def test_a_failing_stream_does_not_stop_the_others() -> None:
    class Broken:
        def beat(self, frame: bytes) -> None:
            raise RuntimeError("boom")

    heartbeat = Heartbeat(INTERVAL)
    heartbeat.add(Broken())
    stream = Stream()
    heartbeat.add(stream)
    await beats(stream, 2)
    heartbeat.close()
