"""The stall watch (core/stalls.py) looks only at streams written to since its last look, or
still waiting for acknowledgements, and drops those stuck past the write timeout."""

from __future__ import annotations

from progress_relay.brokers.memory import MemoryBroker
from progress_relay.core.hub import Hub
from progress_relay.core.stalls import StallWatch
from progress_relay.http.streams import _Body
from tests.support.app import make_settings
from tests.unit.test_subscriber import MemorySocket, live, subscriber


def watch() -> StallWatch:
    settings = make_settings()
    return StallWatch(Hub(MemoryBroker(settings), settings), write_timeout=5.0)


def test_an_idle_stream_is_looked_at_only_after_a_write() -> None:
    stalls = watch()
    sub = subscriber()
    socket = live(sub)
    stalls.written(sub)  # went live
    assert stalls.look(0.0) == 0
    assert socket.asked == 1 and stalls.suspects == 0  # clean: not looked at again
    for now in range(1, 10):
        assert stalls.look(float(now)) == 0
    assert socket.asked == 1
    socket.write(b": ping\n\n")
    stalls.written(sub)
    assert stalls.look(10.0) == 0
    assert socket.asked == 2 and stalls.suspects == 0


def test_a_stream_whose_bytes_are_not_acknowledged_is_looked_at_until_dropped() -> None:
    stalls = watch()
    sub = subscriber()
    socket: MemorySocket = live(sub)
    stalls.written(sub)
    stalls.look(0.0)
    for now in range(1, 13):
        stalls.look(float(now))  # skipped: clean
    socket.write(b": ping\n\n")  # the client has stopped reading
    socket.unsent = 8
    stalls.written(sub)
    assert stalls.look(13.0) == 0  # waiting since 12, the watch's last look
    assert stalls.suspects == 1
    for now in range(14, 17):
        assert stalls.look(float(now)) == 0
    assert stalls.look(17.0) == 1
    assert sub.dropped and stalls.suspects == 0


def test_a_closed_stream_leaves_the_watch() -> None:
    stalls = watch()
    sub = subscriber()
    socket = live(sub)
    socket.unsent = 8
    stalls.written(sub)
    stalls.look(0.0)
    assert stalls.suspects == 1
    sub.disconnect()
    stalls.look(1.0)
    assert stalls.suspects == 0


class _Transport:
    """asyncio's transport as the stream's ``_Body`` uses it: what was written."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def get_extra_info(self, name: str) -> None:
        return None


def test_a_heartbeat_is_written_but_not_reported_to_the_watch() -> None:
    # 10,000 idle streams: a look (a system call) per stream per heartbeat was a quarter of
    # the relay's idle CPU, for bytes that cannot fill a client's buffers.
    stalls = watch()
    sub = subscriber()
    transport = _Transport()
    body = _Body(transport, None, framed=True)  # type: ignore[arg-type]
    body.watched_by(stalls, sub)
    body.beat(b": ping\n\n")
    assert transport.data == [b"8\r\n: ping\n\n\r\n"]  # one HTTP chunk
    assert stalls.suspects == 0
    body.write(b"id: 1\n\n")
    assert stalls.suspects == 1  # an event's write is looked at
