"""The nesting limit of JSON bodies, judged on the bytes: strings do not nest, escapes inside
them do not end them, and the answer agrees with a decoder's own count."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from progress_relay.wire.errors import JsonTooDeep
from progress_relay.wire.json_depth import check_nesting, nesting_exceeds


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


documents = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(alphabet='[]{}"\\ab', max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text('[]{}"\\', max_size=3), inner)
    ),
    max_leaves=30,
)


@given(documents, st.integers(1, 12))
def test_agrees_with_the_depth_of_the_decoded_value(document: Any, limit: int) -> None:
    body = json.dumps(document).encode()
    assert nesting_exceeds(body, limit) == (depth(document) > limit)


@pytest.mark.parametrize(
    ("body", "limit", "deep"),
    [
        (b"[]", 1, False),
        (b"[[]]", 1, True),
        (b'{"a":"[[[[[["}', 1, False),  # brackets in a string are text
        (b'["\\"[[[["]', 1, False),  # an escaped quote does not end the string
        (b'["\\\\", [[1]]]', 2, True),  # an escaped backslash does
        (b"[" * 100, 64, True),  # not valid JSON, still too deep
        (b"{}" * 1000, 1, False),  # many brackets, none inside another
    ],
)
def test_examples(body: bytes, limit: int, deep: bool) -> None:
    assert nesting_exceeds(body, limit) is deep


def test_too_deep_is_400_json_too_deep_naming_the_setting() -> None:
    with pytest.raises(JsonTooDeep) as raised:
        check_nesting(b"[[[1]]]", 2)
    assert raised.value.status == 400
    assert "limits.max_json_depth" in str(raised.value)
    check_nesting(b"[[1]]", 2)
