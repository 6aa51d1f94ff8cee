"""The bounded history of one job: count and byte bounds, the newest event kept, coverage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from progress_relay.core.ring import Ring
from progress_relay.wire.events import Event


def event(seq: int, size: int = 10) -> Event:
    return Event("job", seq, f"e-{seq}", "x", b'"' + b"a" * size + b'"')


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def test_empty_ring_covers_everything() -> None:
    ring = Ring(3, 1000)
    assert len(ring) == 0
    assert ring.bytes == 0
    assert ring.dropped_upto == 0
    assert ring.covers(0)
    assert ring.since(0) == []


def test_bounded_by_count_keeps_the_newest() -> None:
    ring = Ring(3, 10**6)
    for seq in range(1, 6):
        ring.append(event(seq))
    assert len(ring) == 3
    assert seqs(ring.since(0)) == [3, 4, 5]
    assert ring.dropped_upto == 2
    assert ring.bytes == sum(event(s).size for s in (3, 4, 5))


def test_bounded_by_bytes() -> None:
    size = event(1).size
    ring = Ring(100, 2 * size + 1)
    for seq in range(1, 5):
        ring.append(event(seq))
    assert seqs(ring.since(0)) == [3, 4]
    assert ring.bytes == 2 * size
    assert ring.dropped_upto == 2


def test_exactly_at_the_byte_bound_is_kept() -> None:
    size = event(1).size
    ring = Ring(100, 2 * size)
    ring.append(event(1))
    ring.append(event(2))
    assert seqs(ring.since(0)) == [1, 2]
    assert ring.dropped_upto == 0


def test_newest_event_always_kept_even_when_larger_than_the_bound() -> None:
    ring = Ring(10, 20)
    ring.append(event(1, size=2))
    ring.append(event(2, size=500))
    assert seqs(ring.since(0)) == [2]
    assert ring.dropped_upto == 1
    ring.append(event(3, size=2))
    assert seqs(ring.since(0)) == [3]
    assert ring.dropped_upto == 2
    assert ring.bytes == event(3, size=2).size


def test_covers_and_since() -> None:
    ring = Ring(3, 10**6)
    for seq in (2, 4, 6, 8, 10):  # sequences are global: a job's events have gaps
        ring.append(event(seq))
    assert ring.dropped_upto == 4
    assert not ring.covers(0)
    assert not ring.covers(3)
    assert ring.covers(4)
    assert ring.covers(5)
    assert ring.covers(10)
    assert seqs(ring.since(4)) == [6, 8, 10]
    assert seqs(ring.since(7)) == [8, 10]
    assert seqs(ring.since(8)) == [10]
    assert ring.since(10) == []
    assert ring.since(99) == []


def test_one_event_ring() -> None:
    ring = Ring(1, 10**6)
    ring.append(event(1))
    ring.append(event(2))
    assert seqs(ring.since(0)) == [2]
    assert ring.covers(1) and not ring.covers(0)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=60),
    max_events=st.integers(min_value=1, max_value=20),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_keeps_the_longest_suffix_within_both_bounds(
    sizes: list[int], max_events: int, max_bytes: int
) -> None:
    ring = Ring(max_events, max_bytes)
    events = [event(seq, size) for seq, size in enumerate(sizes, start=1)]
    for e in events:
        ring.append(e)
    kept = 1  # the newest always stays
    while (
        kept < len(events)
        and kept + 1 <= max_events
        and sum(e.size for e in events[-(kept + 1) :]) <= max_bytes
    ):
        kept += 1
    assert seqs(ring.since(0)) == seqs(events[-kept:])
    assert len(ring) == kept
    assert ring.bytes == sum(e.size for e in events[-kept:])
    assert ring.dropped_upto == len(events) - kept
    assert ring.covers(len(events) - kept)
    assert ring.covers(0) == (kept == len(events))


@given(
    max_events=st.integers(1, 6),
    max_bytes=st.integers(20, 200),
    before=st.lists(st.integers(0, 60), max_size=8),
    after=st.lists(st.integers(0, 60), min_size=1, max_size=8),
)
def test_would_push_out_tells_what_append_drops(
    max_events: int, max_bytes: int, before: list[int], after: list[int]
) -> None:
    ring = Ring(max_events, max_bytes)
    for seq, size in enumerate(before, 1):
        ring.append(event(seq, size))
    new = [event(len(before) + n, size) for n, size in enumerate(after, 1)]
    held = [*ring.since(0), *new]
    out, out_bytes = ring.would_push_out([e.size for e in new])
    for one in new:
        ring.append(one)
    kept = ring.since(0)
    assert out == len(held) - len(kept)
    assert out_bytes == sum(e.size for e in held[:out])


def test_clear_drops_the_history_and_covers_nothing_before_it() -> None:
    ring = Ring(10, 10**6)
    for seq in range(1, 4):
        ring.append(event(seq))
    ring.clear()
    assert (len(ring), ring.bytes, ring.dropped_upto) == (0, 0, 3)
    assert not ring.covers(0) and not ring.covers(2)
    assert ring.covers(3)
    ring.append(event(4))
    assert seqs(ring.since(3)) == [4]
    empty = Ring(10, 10**6)
    empty.clear()
    assert empty.covers(0)
