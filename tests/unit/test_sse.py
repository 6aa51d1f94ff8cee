"""SSE frame encoding (wire/sse.py), byte for byte. What streams write over HTTP is
tests/contract/test_frames.py."""

from __future__ import annotations

from progress_relay.wire import sse


def test_frame_encoding_units() -> None:
    assert sse.event_frame("e-1", "progress", b"{}") == b"id: e-1\nevent: progress\ndata: {}\n\n"
    assert sse.event_frame(None, "reset", b"{}") == b"event: reset\ndata: {}\n\n"
    assert sse.retry_frame(0) == b"retry: 0\n\n"
    assert sse.job_data("j.1:x-y", b'{"a":1}') == b'{"job":"j.1:x-y","data":{"a":1}}'
    assert sse.retry_frame(3000) == b"retry: 3000\n\n"
    assert sse.event_frame("7-1", "log", b'{"message":"a b"}') == (
        b'id: 7-1\nevent: log\ndata: {"message":"a b"}\n\n'
    )
