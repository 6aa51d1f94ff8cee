"""The Flusher: one flush at the end of the loop's turn, every stream added meanwhile in it, and
the next flush delayed by as long as this one took (at most MAX_DELAY). The loop's clock stands
still in these tests and a flush "takes" the time it moves the clock by, so the schedule is read
off the loop's clock, exactly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from progress_relay.core.flusher import MAX_DELAY, Flusher, chunked
from tests.support.loop import FrozenClockLoop, on_frozen_clock, turn


class Stream:
    """A flushable that records its flushes in ``log`` and may do something while flushing."""

    def __init__(self, name: str, log: list[str], then: Callable[[], None] | None = None) -> None:
        self.name = name
        self.log = log
        self.then = then

    def flush(self) -> None:
        self.log.append(self.name)
        if self.then is not None:
            self.then()

    def __repr__(self) -> str:
        return f"<Stream {self.name}>"


def test_chunked_frames_bytes_as_one_http_chunk() -> None:
    assert chunked(b"abc") == b"3\r\nabc\r\n"
    assert chunked(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert chunked(b"y" * 4096) == b"1000\r\n" + b"y" * 4096 + b"\r\n"
    frame = b"id: 1-2\nevent: progress\ndata: {}\n\n"
    assert chunked(frame) == b"%x\r\n%s\r\n" % (len(frame), frame) == b"22\r\n" + frame + b"\r\n"


@on_frozen_clock
async def test_streams_added_in_one_turn_flush_together_at_its_end(loop: FrozenClockLoop) -> None:
    flusher = Flusher()
    log: list[str] = []
    flusher.add(Stream("a", log))
    flusher.add(Stream("b", log))
    assert log == []  # not during the turn that added them
    loop.call_soon(log.append, "next turn")
    await turn()
    assert log == ["a", "b", "next turn"]
    await turn(3)
    assert log == ["a", "b", "next turn"]  # once each


@on_frozen_clock
async def test_a_stream_added_by_a_flush_is_flushed_in_the_same_turn(loop: FrozenClockLoop) -> None:
    flusher = Flusher()
    log: list[str] = []
    second = Stream("b", log)

    def add_more() -> None:
        loop.call_soon(log.append, "next turn")
        flusher.add(second)

    flusher.add(Stream("a", log, then=add_more))
    await turn(2)
    assert log == ["a", "b", "next turn"]


@on_frozen_clock
async def test_a_failing_flush_is_logged_and_the_others_still_flush(
    loop: FrozenClockLoop,
) -> None:
    flusher = Flusher()
    log: list[str] = []

    def fail() -> None:
        raise RuntimeError("socket gone")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("progress_relay.core.flusher")
    logger.addHandler(handler)
    try:
        flusher.add(Stream("a", log))
        flusher.add(Stream("bad", log, then=fail))
        flusher.add(Stream("c", log))
        await turn()
    finally:
        logger.removeHandler(handler)
    assert log == ["a", "bad", "c"]
    [record] = records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "flushing <Stream bad> failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    # and the flusher goes on
    flusher.add(Stream("d", log))
    await turn()
    assert log == ["a", "bad", "c", "d"]


async def _flush_taking(loop: FrozenClockLoop, flusher: Flusher, took: float) -> None:
    """One flush that moves the loop's clock by ``took``."""
    log: list[str] = []

    def spend() -> None:
        loop.now += took

    flusher.add(Stream("slow", log, then=spend))
    await turn()
    assert log == ["slow"]


async def _next_flush_is_at(loop: FrozenClockLoop, flusher: Flusher, due: float) -> None:
    """A stream added now is flushed when the loop's clock reads ``due``, not before."""
    flushed: list[float] = []
    flusher.add(Stream("next", [], then=lambda: flushed.append(loop.time())))
    await turn(3)
    assert flushed == []
    loop.now = due - 1e-6
    await turn(3)
    assert flushed == []
    loop.now = due
    await turn(2)  # (a turn resumes this test before it runs the timers that became due)
    assert flushed == [due]


@pytest.mark.parametrize("took", [MAX_DELAY / 4, MAX_DELAY / 2, MAX_DELAY])
def test_the_next_flush_waits_as_long_as_the_last_one_took(took: float) -> None:
    @on_frozen_clock
    async def check(loop: FrozenClockLoop) -> None:
        flusher = Flusher()
        await _flush_taking(loop, flusher, took)
        await _next_flush_is_at(loop, flusher, loop.time() + took)

    check()


@pytest.mark.parametrize("took", [MAX_DELAY * 2, 1.0, 30.0])
def test_the_next_flush_waits_at_most_max_delay(took: float) -> None:
    @on_frozen_clock
    async def check(loop: FrozenClockLoop) -> None:
        flusher = Flusher()
        await _flush_taking(loop, flusher, took)
        await _next_flush_is_at(loop, flusher, loop.time() + MAX_DELAY)

    check()


@on_frozen_clock
async def test_a_flush_after_the_wait_is_over_is_immediate(loop: FrozenClockLoop) -> None:
    flusher = Flusher()
    await _flush_taking(loop, flusher, MAX_DELAY)
    loop.now += MAX_DELAY  # idle for as long as the last flush took
    log: list[str] = []
    flusher.add(Stream("a", log))
    await turn()
    assert log == ["a"]
    # and a flush that took no time delays nothing
    flusher.add(Stream("b", log))
    await turn()
    assert log == ["a", "b"]


@on_frozen_clock
async def test_streams_added_while_waiting_go_out_in_one_flush(loop: FrozenClockLoop) -> None:
    flusher = Flusher()
    await _flush_taking(loop, flusher, MAX_DELAY)
    log: list[str] = []
    flusher.add(Stream("a", log, then=lambda: loop.call_soon(log.append, "next turn")))
    await turn(3)
    flusher.add(Stream("b", log))
    await turn(3)
    assert log == []  # the clock has not moved: still waiting
    loop.now += MAX_DELAY
    await turn(3)
    assert log == ["a", "b", "next turn"]


def test_the_loop_clock_is_what_schedules() -> None:
    """A check of the harness: on a real loop the first flush of a new Flusher is immediate."""

    async def main() -> list[str]:
        flusher = Flusher()
        log: list[str] = []
        flusher.add(Stream("a", log))
        await asyncio.sleep(0)
        return log

    assert asyncio.run(main()) == ["a"]
