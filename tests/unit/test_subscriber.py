"""One stream's Subscriber: the hand-over from replay to live events (nothing missed, nothing
twice), each job's high-water seq, conflation of `progress` only while the socket pushes back,
the drop past its frame and byte bounds, reset_job, ends, and what next_chunk answers. The
socket is a memory ``Socket`` and the handler drains it as http/streams.py does
(tests/support/loop.py)."""

from __future__ import annotations

from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher, chunked
from progress_relay.core.subscriber import Subscriber
from progress_relay.wire.events import Event
from tests.support.loop import FrozenClockLoop, Handler, MemorySocket, on_frozen_clock, turn

RETRY = b"retry: 3000\n\n"
RESET = b'event: reset\ndata: {"id":"a"}\n\n'


def event(job_id: str, seq: int, name: str = "log", data: bytes = b"{}") -> Event:
    return Event(job_id, seq, f"e-{seq}", name, data)


def subscriber(
    *jobs: str,
    max_frames: int = 100,
    max_bytes: int = 1 << 30,
    counts: RelayCounts | None = None,
) -> Subscriber:
    return Subscriber(
        jobs or ("a",),
        multi=len(jobs) > 1,
        max_frames=max_frames,
        max_bytes=max_bytes,
        counts=counts if counts is not None else RelayCounts(),
        flusher=Flusher(),
    )


def frames(*events: Event) -> bytes:
    return b"".join(e.frame for e in events)


# --- hand-over -------------------------------------------------------------------------------


@on_frozen_clock
async def test_live_events_are_held_until_start_then_follow_the_replay_once(
    loop: FrozenClockLoop,
) -> None:
    sub = subscriber()
    e = [event("a", seq) for seq in range(1, 8)]
    sub.push(e[3:5])  # 4 and 5 arrive live while the replay (1..5) is being read
    sub.push(e[5:6])
    assert sub.high("a") == 0  # held, nothing queued yet
    sub.start([RETRY, *(x.frame for x in e[:5])], {"a": 5}, [])
    sub.push(e[6:7])
    assert await sub.next_chunk() == RETRY + frames(*e)  # 1..7, each once, in order
    assert sub.taken == 8
    assert sub.high("a") == 7


@on_frozen_clock
async def test_held_events_older_than_the_replay_are_not_repeated(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    sub.push([event("a", 2), event("a", 3)])
    sub.start([RETRY, event("a", 3).frame], {"a": 3}, [])
    assert await sub.next_chunk() == RETRY + event("a", 3).frame


@on_frozen_clock
async def test_more_held_than_max_frames_drops(loop: FrozenClockLoop) -> None:
    counts = RelayCounts()
    sub = subscriber(max_frames=3, counts=counts)
    sub.push([event("a", 1), event("a", 2)])
    sub.push([event("a", 3)])
    assert not sub.dropped
    sub.push([event("a", 4)])
    assert sub.dropped and counts.dropped == 1
    sub.start([RETRY], {}, [])
    assert await sub.next_chunk() is None


@on_frozen_clock
async def test_jobs_the_replay_ended_are_over(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    done = event("a", 2, "complete")
    sub.start([RETRY, done.job_frame], {"a": 2}, ["a"])
    assert sub.active == {"b"}
    sub.push([event("a", 3)])  # (cannot happen after a terminal event; ignored if it did)
    assert await sub.next_chunk() == RETRY + done.job_frame


# --- each job's high-water seq ---------------------------------------------------------------


@on_frozen_clock
async def test_each_job_takes_only_events_newer_than_its_last(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    sub.start([], {"a": 3}, [])
    assert (sub.high("a"), sub.high("b"), sub.high("c")) == (3, 0, 0)
    sub.push([event("a", 2), event("a", 3), event("a", 4)])
    sub.push([event("b", 1)])
    sub.push([event("a", 4)])  # again
    sub.push([event("b", 1), event("b", 2)])
    assert (sub.high("a"), sub.high("b")) == (4, 2)
    expected = [event("a", 4), event("b", 1), event("b", 2)]
    assert await sub.next_chunk() == b"".join(e.job_frame for e in expected)
    assert sub.taken == 3


@on_frozen_clock
async def test_a_single_job_stream_queues_plain_frames(loop: FrozenClockLoop) -> None:
    sub = subscriber("a")
    sub.start([], {}, [])
    one = event("a", 1)
    sub.push([one])
    assert await sub.next_chunk() == one.frame != one.job_frame


@on_frozen_clock
async def test_a_job_no_longer_followed_is_ignored(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    sub.start([], {}, [])
    sub.push([event("c", 1)])  # not a job of this stream
    sub.end_job("b")
    sub.push([event("b", 1)])
    sub.push([event("a", 1)])
    assert await sub.next_chunk() == event("a", 1).job_frame


# --- conflation ------------------------------------------------------------------------------


@on_frozen_clock
async def test_progress_is_never_conflated_while_the_socket_takes_writes(
    loop: FrozenClockLoop,
) -> None:
    counts = RelayCounts()
    sub = subscriber(counts=counts)
    sub.start([], {}, [])
    p1, p2 = event("a", 1, "progress"), event("a", 2, "progress")
    sub.push([p1])
    sub.push([p2])
    assert await sub.next_chunk() == frames(p1, p2)
    assert counts.conflated == 0


@on_frozen_clock
async def test_while_writing_a_new_progress_replaces_the_waiting_one_of_its_job(
    loop: FrozenClockLoop,
) -> None:
    counts = RelayCounts()
    sub = subscriber("a", "b", counts=counts)
    sub.start([], {}, [])
    sub.writing = True
    a1, a2 = event("a", 1, "progress"), event("a", 2, "log")
    b1 = event("b", 1, "progress")
    a3, a4 = event("a", 3, "progress"), event("a", 4, "progress")
    sub.push([a1, a2])
    sub.push([b1])
    sub.push([a3])
    sub.push([a4])
    # a1 and a3 are superseded; b1 is another job's; the log line is never conflated, and the
    # newest progress moves to the end, so ids stay in order
    assert await sub.next_chunk() == a2.job_frame + b1.job_frame + a4.job_frame
    assert sub.taken == 3
    assert counts.conflated == 2
    assert sub.high("a") == 4


@on_frozen_clock
async def test_conflation_forgets_what_was_written(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    sub.start([], {}, [])
    sub.writing = True
    p1, p2 = event("a", 1, "progress"), event("a", 2, "progress")
    sub.push([p1])
    assert await sub.next_chunk() == p1.frame
    sub.push([p2])  # p1 is out already: nothing to replace
    assert await sub.next_chunk() == p2.frame


# --- bounds ----------------------------------------------------------------------------------


@on_frozen_clock
async def test_past_max_frames_waiting_the_subscriber_is_dropped(loop: FrozenClockLoop) -> None:
    counts = RelayCounts()
    sub = subscriber(max_frames=3, counts=counts)
    socket = MemorySocket()
    sub.connect(socket)
    sub.start([RETRY], {}, [])
    sub.push([event("a", 1), event("a", 2)])
    assert not sub.dropped  # 3 waiting
    sub.push([event("a", 3)])
    assert sub.dropped and sub.closed
    assert counts.dropped == 1
    assert socket.aborts == 1  # the connection is cut: a blocked handler cannot see the drop
    assert await sub.next_chunk() is None  # what waited is discarded
    sub.drop()
    assert counts.dropped == 1 and socket.aborts == 1  # once
    sub.push([event("a", 4)])
    assert await sub.next_chunk() is None


@on_frozen_clock
async def test_past_max_bytes_counting_the_socket_buffer_while_writing_it_is_dropped(
    loop: FrozenClockLoop,
) -> None:
    one = event("a", 1)
    size = len(one.frame)

    def connected(unsent: int, writing: bool) -> tuple[Subscriber, MemorySocket]:
        sub = subscriber(max_bytes=size + 10)
        socket = MemorySocket()
        socket.unsent = unsent
        sub.connect(socket)
        sub.start([], {}, [])
        sub.writing = writing
        return sub, socket

    fits, _ = connected(unsent=10, writing=True)
    fits.push([one])
    assert not fits.dropped
    over, socket = connected(unsent=11, writing=True)
    over.push([one])
    assert over.dropped and socket.aborts == 1
    idle, _ = connected(unsent=11, writing=False)  # bytes count only while the socket pushes back
    idle.push([one])
    assert not idle.dropped
    assert await idle.next_chunk() == one.frame
    waiting, _ = connected(unsent=0, writing=True)
    waiting.push([one])
    waiting.push([event("a", 2, data=b"[" + b"0" * 8 + b"]")])  # the queued bytes count too
    assert waiting.dropped


# --- reset_job -------------------------------------------------------------------------------


@on_frozen_clock
async def test_reset_job_queues_the_reset_and_follows_from_its_seq(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    sub.start([], {"a": 10}, [])
    sub.reset_job("a", RESET, 2, finished=False)  # a new epoch: seqs start lower
    assert sub.high("a") == 2
    sub.push([event("a", 2), event("a", 3)])
    assert await sub.next_chunk() == RESET + event("a", 3).job_frame
    assert sub.active == {"a", "b"}


@on_frozen_clock
async def test_reset_job_of_a_finished_job_ends_it(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    sub.start([], {}, [])
    sub.reset_job("a", RESET, 5, finished=True)
    assert sub.closed
    assert await sub.next_chunk() == RESET
    assert await sub.next_chunk() is None


@on_frozen_clock
async def test_reset_job_while_handing_over_or_full_drops(loop: FrozenClockLoop) -> None:
    connecting = subscriber()
    connecting.reset_job("a", RESET, 1, finished=False)
    assert connecting.dropped
    full = subscriber(max_frames=2)
    full.start([RETRY, event("a", 1).frame], {"a": 1}, [])
    full.reset_job("a", RESET, 1, finished=False)
    assert full.dropped
    room = subscriber(max_frames=2)
    room.start([RETRY], {}, [])
    room.reset_job("a", RESET, 1, finished=False)
    assert not room.dropped
    assert await room.next_chunk() == RETRY + RESET


@on_frozen_clock
async def test_reset_job_of_a_job_not_followed_does_nothing(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    sub.start([], {}, [])
    sub.end_job("a")
    sub.reset_job("a", RESET, 1, finished=False)
    sub.reset_job("c", RESET, 1, finished=False)
    assert not sub.dropped
    sub.add(RETRY)
    assert await sub.next_chunk() == RETRY


# --- ends and next_chunk ---------------------------------------------------------------------


@on_frozen_clock
async def test_end_writes_what_is_queued_then_ends(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    sub.start([RETRY], {}, [])
    sub.end()
    assert sub.closed and not sub.dropped
    assert await sub.next_chunk() == RETRY
    assert await sub.next_chunk() is None


@on_frozen_clock
async def test_end_job_ends_the_stream_with_its_last_job(loop: FrozenClockLoop) -> None:
    sub = subscriber("a", "b")
    sub.start([], {}, [])
    sub.end_job("a")
    assert not sub.closed
    sub.end_job("b")
    assert sub.closed
    assert await sub.next_chunk() is None


@on_frozen_clock
async def test_a_terminal_event_ends_its_job(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    sub.start([], {}, [])
    done, late = event("a", 1, "complete"), event("a", 2)
    sub.push([done, late])  # (the broker refuses events after a terminal one)
    assert sub.closed
    assert await sub.next_chunk() == done.frame
    assert await sub.next_chunk() is None


@on_frozen_clock
async def test_next_chunk_waits_for_frames_and_ends(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    socket = MemorySocket()
    handler = Handler(sub, socket)
    sub.start([RETRY], {}, [])
    await handler.start()
    assert handler.first == RETRY
    assert handler.chunks == [] and not handler.ended  # asleep: nothing queued
    one = event("a", 1)
    sub.push([one])  # live: the flusher writes it at the end of the turn, the handler sleeps on
    await turn()
    assert socket.writes == [("write", one.frame)]
    assert handler.chunks == []
    sub.end()
    await turn(2)
    assert handler.ended and handler.chunks == []
    assert sub.socket is None and not sub.live  # disconnected


@on_frozen_clock
async def test_next_chunk_is_empty_when_woken_to_wait_for_the_socket(
    loop: FrozenClockLoop,
) -> None:
    counts = RelayCounts()
    sub = subscriber(counts=counts)
    socket = MemorySocket()
    handler = Handler(sub, socket)
    sub.start([RETRY], {}, [])
    await handler.start()
    socket.pushing = True
    one, two = event("a", 1), event("a", 2, "progress")
    sub.push([one])
    await turn(2)
    assert socket.writes == [("write", one.frame)]  # the flusher's write
    assert (counts.writes, counts.delivered) == (1, 1)
    assert handler.chunks == [b""]  # then the handler is woken to wait for the socket
    assert sub.writing
    sub.push([two])
    sub.push([event("a", 3, "progress")])
    await turn(2)
    assert handler.chunks == [b""]  # blocked; what comes meanwhile waits, conflated
    handler.release()
    await turn(2)
    assert handler.chunks == [b"", event("a", 3, "progress").frame]
    assert counts.conflated == 1


@on_frozen_clock
async def test_take_writes_a_turns_chunk_only_to_an_idle_stream_in_step(
    loop: FrozenClockLoop,
) -> None:
    one, two = event("a", 1), event("a", 2)
    wire = chunked(frames(one, two))
    sub = subscriber()
    socket = MemorySocket()
    handler = Handler(sub, socket)
    sub.start([RETRY], {}, [])
    assert not sub.take([one, two], wire)  # not live yet: queued
    await handler.start()
    assert handler.first == RETRY + frames(one, two)
    three = event("a", 3)
    assert sub.take([three], chunked(three.frame))
    assert socket.writes == [("framed", chunked(three.frame))]
    assert sub.high("a") == 3
    assert not sub.take([three], chunked(three.frame))  # not new: nothing written again
    await turn()
    assert socket.writes == [("framed", chunked(three.frame))]


@on_frozen_clock
async def test_take_of_a_terminal_event_wakes_the_handler_to_end(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    socket = MemorySocket()
    handler = Handler(sub, socket)
    sub.start([RETRY], {}, [])
    await handler.start()
    done = event("a", 1, "complete")
    assert sub.take([done], chunked(done.frame))
    await turn()
    assert handler.ended and handler.chunks == []
    assert socket.writes == [("framed", chunked(done.frame))]


@on_frozen_clock
async def test_after_disconnect_nothing_writes_to_the_socket(loop: FrozenClockLoop) -> None:
    sub = subscriber()
    socket = MemorySocket()
    sub.connect(socket)
    sub.go_live()
    sub.disconnect()
    sub.start([RETRY], {}, [])
    one = event("a", 1)
    assert not sub.take([one], chunked(one.frame))
    sub.flush()
    assert socket.writes == []
    assert await sub.next_chunk() == RETRY + one.frame
    sub.drop()
    assert socket.aborts == 0


def test_go_live_needs_a_socket() -> None:
    sub = subscriber()
    sub.go_live()
    assert not sub.live


# --- the stall watch's look --------------------------------------------------------------------


def live(sub: Subscriber) -> MemorySocket:
    socket = MemorySocket()
    sub.connect(socket)
    sub.start([], {}, [])
    sub.go_live()
    return socket


def test_a_stream_with_nothing_waiting_costs_the_watch_no_system_call() -> None:
    sub = subscriber()
    socket = live(sub)
    for now in range(100):
        assert not sub.watch(float(now), timeout=5)
    assert socket.asked == 1  # the first look
    socket.write(b"x" * 10)  # written since: looked at once, nothing waits, quiet again
    assert not sub.watch(100.0, timeout=5)
    assert not sub.watch(101.0, timeout=5)
    assert socket.asked == 2


def test_bytes_already_waiting_at_the_first_look_are_counted() -> None:
    sub = subscriber()
    socket = live(sub)
    socket.write(b"x" * 1000)  # the replay, before the watch ever looked
    socket.unsent = 900
    assert not sub.watch(0.0, timeout=5)
    assert not sub.watch(4.9, timeout=5)
    assert sub.watch(5.0, timeout=5)  # no heartbeat needed to notice


def test_bytes_waiting_without_any_acknowledged_for_the_timeout_drop_the_stream() -> None:
    counts = RelayCounts()
    sub = subscriber(counts=counts)
    socket = live(sub)
    sub.watch(0.0, timeout=5)
    socket.write(b"x" * 100)
    socket.unsent = 60  # 40 acknowledged
    assert not sub.watch(1.0, timeout=5)
    socket.write(b": ping\n\n")  # only a heartbeat more, and nothing more acknowledged
    socket.unsent = 68
    assert not sub.watch(3.0, timeout=5)
    assert not sub.watch(5.9, timeout=5)
    assert sub.watch(6.0, timeout=5)
    assert sub.dropped and socket.aborts == 1
    assert counts.write_timeouts == 1


def test_any_acknowledged_byte_is_progress() -> None:
    sub = subscriber()
    socket = live(sub)
    socket.write(b"x" * 200)
    sub.watch(0.0, timeout=5)
    for now in range(1, 30):
        socket.write(b"x" * 10)
        socket.unsent = 9 * now  # more waits each second, yet the client takes some
        assert not sub.watch(float(now), timeout=5)
    socket.unsent = 0
    assert not sub.watch(40.0, timeout=5)
    assert not sub.dropped


def test_past_the_byte_bound_counting_the_sockets_bytes_the_watch_drops() -> None:
    counts = RelayCounts()
    sub = subscriber(max_bytes=1000, counts=counts)
    socket = live(sub)
    sub.watch(0.0, timeout=5)
    socket.write(b"x" * 2000)
    socket.unsent = 990
    assert not sub.watch(0.5, timeout=5)
    sub.add(b"y" * 20)  # queued: 990 in the socket + 20 here
    assert sub.watch(0.6, timeout=5)
    assert counts.dropped == 1 and counts.write_timeouts == 0


def test_the_watch_leaves_streams_that_are_not_live_alone() -> None:
    sub = subscriber()
    socket = MemorySocket()
    sub.connect(socket)  # the head is not out yet
    socket.unsent = 10**9
    assert not sub.watch(100.0, timeout=1)
    assert socket.asked == 0


def test_a_stream_skipped_while_clean_waits_for_acks_from_the_watchs_last_look() -> None:
    sub = subscriber()
    socket = live(sub)
    assert not sub.watch(0.0, timeout=5)  # clean; the watch skips it from now on
    socket.write(b": ping\n\n")  # written at about 14.5, looked at next at 15
    socket.unsent = 8
    # Not "waiting since 0": since the watch's look at 14, when it would have found it clean.
    assert not sub.watch(15.0, timeout=5, clean_since=14.0)
    assert sub.unacknowledged
    assert not sub.watch(18.9, timeout=5, clean_since=18.0)
    assert sub.watch(19.0, timeout=5, clean_since=18.9)
    assert sub.dropped
