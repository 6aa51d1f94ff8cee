"""A job's streamed text: the newest ``bound`` bytes, from a character's start, however it was
appended and trimmed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from progress_relay.wire.content import ContentTail, char_start, newest, trim_limit
from tests.support.properties import PROPERTY


def expected(text: str, bound: int) -> tuple[str, bool]:
    """The rule, spelled out: the longest suffix of ``text`` that has at most ``bound`` bytes and
    starts with a whole character."""
    encoded = text.encode()
    for start in range(max(0, len(encoded) - bound), len(encoded) + 1):
        try:
            return encoded[start:].decode(), start > 0
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: the empty suffix decodes")


def test_short_text_is_kept_whole() -> None:
    tail = ContentTail(16)
    for piece in ("Hello ", "", "world"):
        tail.append(piece)
    assert tail.view() == ("Hello world", False)
    assert tail.held == 11


def test_past_the_bound_the_newest_bytes_stay_from_a_character_start() -> None:
    tail = ContentTail(5)
    tail.append("ab\u20acc")  # a, b, the three bytes of the euro sign, c: 6 bytes
    assert tail.held == 6  # within the trim limit (5 + 1): nothing dropped yet
    assert tail.view() == ("b\u20acc", True)  # the newest 5 bytes
    tail.append("d\u00e9")  # 9 bytes: past the limit; the newest 5 begin inside the euro sign
    assert tail.held == 4 and tail.dropped
    assert tail.view() == ("cd\u00e9", True)
    narrow = ContentTail(3)
    narrow.append("ab\u20acc")  # the newest 3 bytes are the euro sign's last two and c
    assert narrow.view() == ("c", True)


def test_a_character_wider_than_the_bound_leaves_nothing() -> None:
    tail = ContentTail(3)
    tail.append("\U0001f600")  # 4 bytes
    assert tail.view() == ("", True)


def test_trimming_is_amortised() -> None:
    tail = ContentTail(100)
    assert trim_limit(100) == 125
    tail.append("x" * 125)
    assert tail.held == 125  # held until past the limit
    tail.append("y")
    assert tail.held == 100
    assert tail.view() == ("x" * 99 + "y", True)


def test_char_start_skips_continuation_bytes() -> None:
    data = "a\U0001f600".encode()
    assert [char_start(data, i) for i in range(6)] == [0, 1, 5, 5, 5, 5]


def test_newest_reads_a_tail_as_redis_returns_it() -> None:
    # GETRANGE of the last 3 bytes of "ab\u20acc" (6 bytes stored) starts in the euro sign.
    stored = "ab\u20acc".encode()
    assert newest(stored[-3:], len(stored), False) == ("c", True)
    assert newest(stored[-4:], len(stored), False) == ("\u20acc", True)
    assert newest(stored, len(stored), False) == ("ab\u20acc", False)
    assert newest(stored, len(stored), True) == ("ab\u20acc", True)


@settings(PROPERTY, max_examples=300)
@given(
    bound=st.integers(1, 24),
    pieces=st.lists(st.text(st.characters(codec="utf-8"), max_size=8), max_size=30),
)
def test_any_appends_read_as_the_rule(bound: int, pieces: list[str]) -> None:
    tail = ContentTail(bound)
    text = ""
    for piece in pieces:
        tail.append(piece)
        text += piece
        assert tail.view() == expected(text, bound)
        assert tail.held <= trim_limit(bound)
