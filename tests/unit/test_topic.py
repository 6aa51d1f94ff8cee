"""A job's Topic: fan-out of its events to the job's local subscribers. Single-job streams get a
turn's publishes at its end, framed once as one HTTP chunk and written as the same bytes to every
idle stream in step; multi-job streams get each publish at once, so their frames keep the order
of publishing across jobs. Real Subscribers, on memory sockets (tests/support/loop.py)."""

from __future__ import annotations

import time

from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher, chunked
from progress_relay.core.subscriber import Subscriber
from progress_relay.core.topic import Topic
from progress_relay.wire.events import Event
from tests.support.loop import FrozenClockLoop, Handler, MemorySocket, on_frozen_clock, turn

RETRY = b"retry: 3000\n\n"


def event(job_id: str, seq: int, name: str = "progress", data: bytes = b"{}") -> Event:
    return Event(job_id, seq, f"e-{seq}", name, data)


def topic_of(loop: FrozenClockLoop, job_id: str, flusher: Flusher, counts: RelayCounts) -> Topic:
    watched = loop.create_future()
    watched.set_result(None)
    return Topic(job_id, watched, flusher, counts)


async def stream(
    topic: Topic | list[Topic],
    flusher: Flusher,
    counts: RelayCounts,
    *,
    socket: MemorySocket | None = None,
    high: dict[str, int] | None = None,
) -> tuple[Subscriber, Handler]:
    """A live stream of the topic (a multi-job one of several topics), past its hand-over,
    its handler asleep."""
    topics = topic if isinstance(topic, list) else [topic]
    subscriber = Subscriber(
        [t.job_id for t in topics],
        multi=isinstance(topic, list),
        max_frames=100,
        max_bytes=1 << 30,
        counts=counts,
        flusher=flusher,
    )
    for each in topics:
        each.add(subscriber)
    handler = Handler(subscriber, socket or MemorySocket())
    subscriber.start([RETRY], high or {}, [])
    await handler.start()
    assert handler.first == RETRY
    return subscriber, handler


@on_frozen_clock
async def test_a_turns_publishes_go_to_every_idle_stream_as_one_framed_chunk(
    loop: FrozenClockLoop,
) -> None:
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    streams = [await stream(topic, flusher, counts) for _ in range(3)]
    first, second, third = event("a", 1), event("a", 2, "log", b'{"message":"m"}'), event("a", 3)
    topic.publish([first])
    topic.publish([second, third])
    assert all(handler.socket.writes == [] for _, handler in streams)  # not before the turn ends
    await turn()
    wire = chunked(first.frame + second.frame + third.frame)
    writes = [handler.socket.writes for _, handler in streams]
    assert writes == [[("framed", wire)]] * 3
    assert writes[0][0][1] is writes[1][0][1] is writes[2][0][1]  # framed once, for all
    assert all(handler.chunks == [] and not handler.ended for _, handler in streams)  # asleep
    assert (counts.writes, counts.delivered) == (3, 9)
    assert [subscriber.high("a") for subscriber, _ in streams] == [3, 3, 3]
    assert topic.status == "running"


@on_frozen_clock
async def test_the_next_turn_is_a_chunk_of_its_own(loop: FrozenClockLoop) -> None:
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    _, handler = await stream(topic, flusher, counts)
    one, two = event("a", 1), event("a", 2)
    topic.publish([one])
    await turn()
    topic.publish([two])
    await turn()
    assert handler.socket.writes == [("framed", chunked(one.frame)), ("framed", chunked(two.frame))]
    assert (counts.writes, counts.delivered) == (2, 2)


@on_frozen_clock
async def test_a_multi_job_stream_gets_each_publish_in_publish_order(
    loop: FrozenClockLoop,
) -> None:
    flusher, counts = Flusher(), RelayCounts()
    a, b = topic_of(loop, "a", flusher, counts), topic_of(loop, "b", flusher, counts)
    _, single = await stream(a, flusher, counts)
    _, multi = await stream([a, b], flusher, counts)
    a1, b1, a2 = event("a", 1), event("b", 1), event("a", 2)
    a.publish([a1])
    b.publish([b1])
    a.publish([a2])
    await turn()
    # per topic, a turn's batch would have been a1 a2 b1: the multi-job stream keeps the order
    assert multi.socket.writes == [("write", a1.job_frame + b1.job_frame + a2.job_frame)]
    assert single.socket.writes == [("framed", chunked(a1.frame + a2.frame))]


@on_frozen_clock
async def test_a_topic_of_multi_job_streams_only_batches_nothing(loop: FrozenClockLoop) -> None:
    flusher, counts = Flusher(), RelayCounts()
    a = topic_of(loop, "a", flusher, counts)
    subscriber, multi = await stream([a], flusher, counts)
    one = event("a", 1)
    a.publish([one])
    await turn()
    assert multi.socket.writes == [("write", one.job_frame)]
    assert counts.delivered == 1  # written once, by the subscriber's own flush
    a.flush()  # nothing was batched for single-job streams
    assert multi.socket.writes == [("write", one.job_frame)]
    assert subscriber.high("a") == 1


@on_frozen_clock
async def test_a_stream_not_in_step_queues_only_what_is_new(loop: FrozenClockLoop) -> None:
    """One stream has already queued events 1 and 2 (its replay went that far): the turn's
    chunk is not for it; it writes event 3 alone, from its own queue."""
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    _, in_step = await stream(topic, flusher, counts)
    _, ahead = await stream(topic, flusher, counts, high={"a": 2})
    events = [event("a", 1), event("a", 2), event("a", 3)]
    topic.publish(events)
    await turn()
    assert in_step.socket.writes == [("framed", chunked(b"".join(e.frame for e in events)))]
    assert ahead.socket.writes == [("write", events[2].frame)]
    assert (counts.writes, counts.delivered) == (2, 4)


@on_frozen_clock
async def test_a_stream_still_handing_over_holds_the_turns_events(loop: FrozenClockLoop) -> None:
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    _, live = await stream(topic, flusher, counts)
    connecting = Subscriber(
        ["a"], multi=False, max_frames=100, max_bytes=1 << 30, counts=counts, flusher=flusher
    )
    topic.add(connecting)
    events = [event("a", 1), event("a", 2)]
    topic.publish(events)
    await turn()
    assert live.socket.writes == [("framed", chunked(events[0].frame + events[1].frame))]
    assert counts.writes == 1
    connecting.start([RETRY, events[0].frame], {"a": 1}, [])  # its replay had event 1
    assert await connecting.next_chunk() == RETRY + events[0].frame + events[1].frame


@on_frozen_clock
async def test_an_unframed_stream_gets_the_frames_unframed(loop: FrozenClockLoop) -> None:
    """An HTTP/1.0 stream's body is not chunked: the topic's chunk is not for it."""
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    _, handler = await stream(topic, flusher, counts, socket=MemorySocket(framed=False))
    one, two = event("a", 1), event("a", 2)
    topic.publish([one, two])
    await turn()
    assert handler.socket.writes == [("write", one.frame + two.frame)]


@on_frozen_clock
async def test_a_terminal_event_ends_the_streams_after_its_chunk(loop: FrozenClockLoop) -> None:
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    streams = [await stream(topic, flusher, counts) for _ in range(2)]
    progress, complete = event("a", 1), event("a", 2, "complete")
    topic.publish([progress, complete])
    await turn(2)
    for subscriber, handler in streams:
        assert handler.socket.writes == [("framed", chunked(progress.frame + complete.frame))]
        assert handler.ended and handler.chunks == []
        assert subscriber.closed


@on_frozen_clock
async def test_a_stream_whose_socket_pushes_back_is_handed_to_its_handler(
    loop: FrozenClockLoop,
) -> None:
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    subscriber, handler = await stream(topic, flusher, counts)
    handler.socket.pushing = True
    one, two = event("a", 1), event("a", 2)
    topic.publish([one])
    await turn(2)
    assert handler.socket.writes == [("framed", chunked(one.frame))]
    assert handler.chunks == [b""]  # woken with nothing queued: it waits for the socket
    assert subscriber.writing
    topic.publish([two])
    await turn(2)
    assert handler.socket.writes == [("framed", chunked(one.frame))]
    assert handler.chunks == [b""]
    handler.release()
    await turn(2)
    assert handler.chunks == [b"", two.frame]  # it writes what queued meanwhile itself
    assert handler.socket.writes == [("framed", chunked(one.frame))]
    assert (counts.writes, counts.delivered) == (1, 1)  # (the handler counts its own writes)


@on_frozen_clock
async def test_a_discarded_stream_gets_nothing_more(loop: FrozenClockLoop) -> None:
    flusher, counts = Flusher(), RelayCounts()
    topic = topic_of(loop, "a", flusher, counts)
    single, single_handler = await stream(topic, flusher, counts)
    multi, multi_handler = await stream([topic], flusher, counts)
    _, stays = await stream(topic, flusher, counts)
    topic.discard(single)
    topic.discard(multi)
    assert topic.subscribers == {stays.subscriber}
    one = event("a", 1)
    topic.publish([one])
    await turn()
    assert single_handler.socket.writes == multi_handler.socket.writes == []
    assert stays.socket.writes == [("framed", chunked(one.frame))]
    assert (counts.writes, counts.delivered) == (1, 1)
    topic.discard(single)  # again: nothing happens


@on_frozen_clock
async def test_restart_makes_the_job_wait_for_events_as_if_new(loop: FrozenClockLoop) -> None:
    flusher, counts = Flusher(), RelayCounts()
    before = time.monotonic()
    topic = topic_of(loop, "a", flusher, counts)
    assert topic.status is None
    assert topic.created >= before
    assert topic.watching.done()
    topic.publish([event("a", 1)])
    assert topic.status == "running"
    await turn()
    created = topic.created
    topic.restart()
    assert topic.status is None
    assert topic.created >= created
    topic.publish([event("a", 1)])  # a new history begins again at its first event
    assert topic.status == "running"
