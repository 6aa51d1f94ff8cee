"""The load generator's SSE subscriber: one asyncio Protocol per connection, no HTTP library.

It is the part of the bench that must not be the bottleneck, so it does per-read work only:
the HTTP/1.1 response head is parsed once, chunked transfer coding is removed with slices,
and the complete SSE frames of a read are checked with one regular-expression scan and one
list comparison. Frames are not split one by one.

Every payload carries ``"s":<sequence of the event in its job>`` and ``"t":<publish time in
µs since the epoch>``, so a subscriber checks exactly-once, in-order delivery (a read whose
sequences are the next expected ones is the fast path) and, when sampled, the latency of every
event of the read (the same receive time for all of them: the time of the read).
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import Callable

# "s" and "t" next to each other, as every server here forwards the publisher's JSON unchanged
# (the naive relay with `json.dumps`, which may add spaces).
_SEQ = re.compile(rb'"s": ?(\d+)')
_SEQ_TIME = re.compile(rb'"s": ?(\d+), ?"t": ?(\d+)')
# Heartbeat comments: ": ping" (progress-relay, aiohttp-sse) and ":ping" (Nchan).
_PING = b": ping"
_PING_NCHAN = b":ping"
# SO_LINGER 0: close with RST, so that 10,000 closed streams do not leave 10,000 TIME_WAIT
# sockets (and used-up ports) behind for the next run.
_LINGER_RST = struct.pack("ii", 1, 0)

# Sequence numbers as the bytes found in payloads, so that a read is checked by comparing two
# lists of bytes (C speed) instead of converting each one.
_SEQ_BYTES: list[bytes] = []


def expected_sequences(count: int) -> list[bytes]:
    while len(_SEQ_BYTES) < count + 1:
        _SEQ_BYTES.append(str(len(_SEQ_BYTES)).encode())
    return _SEQ_BYTES


class Tally:
    """What all subscribers of one measurement add up to, and their completion."""

    __slots__ = (
        "closed",
        "complete",
        "completed_at",
        "connected",
        "duplicates",
        "errors",
        "events",
        "heartbeats",
        "latencies_us",
        "lost",
        "on_complete",
        "out_of_order",
        "statuses",
        "target_subscribers",
    )

    def __init__(self) -> None:
        self.connected = 0
        self.closed = 0
        self.events = 0
        self.heartbeats = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.lost = 0  # gaps seen inside a stream; what never came is counted at the end
        self.errors: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.latencies_us: list[int] = []
        self.complete = 0
        self.completed_at = 0.0
        self.target_subscribers = 0
        self.on_complete: Callable[[], None] | None = None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class SseSubscriber(asyncio.Protocol):
    """One SSE stream. ``target`` is the sequence after the last event it must see."""

    __slots__ = (
        "_body",
        "_chunk_left",
        "_chunked",
        "_head",
        "_in_head",
        "_last_part",
        "_pending",
        "closing",
        "connected",
        "done",
        "expected",
        "next_seq",
        "on_lost",
        "sample",
        "tally",
        "target",
        "transport",
    )

    def __init__(self, tally: Tally, target: int, *, first_seq: int = 0, sample: bool) -> None:
        self.tally = tally
        self.target = target
        self.next_seq = first_seq
        self.sample = sample
        self.expected = expected_sequences(target)
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = target <= first_seq
        self._last_part = b""  # the frames of the last read that held events
        self.closing = False
        self.on_lost: Callable[[SseSubscriber], None] | None = None
        self._in_head = True
        self._head = b""
        self._chunked = False
        self._chunk_left = 0  # body bytes left in the current chunk; -1: inside a size line
        self._pending = b""  # a chunk-size line cut by a read
        self._body = b""  # an SSE frame cut by a read

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.closed += 1
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionResetError("closed before a response"))
        if self.on_lost is not None:
            self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            data = self._read_head(data)
            if not data:
                return
        if self._chunked:
            data = self._dechunk(data)
        if self._body:
            data = self._body + data
            self._body = b""
        # A frame ends with an empty line: "\n\n" (relay, Nchan) or "\r\n\r\n" (aiohttp-sse).
        # Most reads end with a whole frame.
        if data.endswith(b"\n\n"):
            self._frames(data)
            return
        end = max(data.rfind(b"\n\n"), data.rfind(b"\n\r\n"))
        if end < 0:
            self._body = data
            return
        end += 2 if data[end + 1] == 10 else 3
        self._body = data[end:]
        self._frames(data[:end] if self._body else data)

    # -- parsing ------------------------------------------------------------------------------

    def _read_head(self, data: bytes) -> bytes:
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head
            return b""
        self._in_head = False
        self._head = b""
        status = int(head[9:12])
        tally = self.tally
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status != 200:
            tally.error(f"HTTP {status}")
            self.connected.set_exception(ConnectionRefusedError(f"HTTP {status}"))
            if self.transport is not None:
                self.transport.close()
            return b""
        self._chunked = b"transfer-encoding: chunked" in head[:end].lower()
        self._chunk_left = -1
        tally.connected += 1
        self.connected.set_result(None)
        return head[end + 4 :]

    def _dechunk(self, data: bytes) -> bytes:
        left = self._chunk_left
        if left < 0 and not self._pending:
            # The common read: exactly one whole chunk ("<hex>\r\n<body>\r\n").
            line = data.find(b"\r\n")
            if line > 0:
                size = int(data[:line], 16)
                if len(data) == line + size + 4:
                    return data[line + 2 : line + 2 + size]
        out: list[bytes] = []
        pos = 0
        length = len(data)
        if self._pending:
            data = self._pending + data
            length = len(data)
            self._pending = b""
        while pos < length:
            if left > 0:
                piece = data[pos : pos + left]
                out.append(piece)
                pos += len(piece)
                left -= len(piece)
                continue
            if left == 0:  # the CRLF after a chunk's body
                if length - pos < 2:
                    self._pending = data[pos:]
                    pos = length
                    left = 0
                    break
                pos += 2
                left = -1
                continue
            line = data.find(b"\r\n", pos)
            if line < 0:
                self._pending = data[pos:]
                break
            size = int(data[pos:line].split(b";", 1)[0], 16)
            pos = line + 2
            if size == 0:  # the last chunk: the server ended the stream
                left = -1
                break
            left = size
        self._chunk_left = left
        return b"".join(out)

    def _frames(self, part: bytes) -> None:
        tally = self.tally
        if b"ping" in part:
            tally.heartbeats += part.count(_PING) + part.count(_PING_NCHAN)
        if self.sample:
            found = _SEQ_TIME.findall(part)
            if not found:
                return
            seqs = [seq for seq, _ in found]
            now_us = time.time_ns() // 1000
            tally.latencies_us.extend([now_us - int(sent) for _, sent in found])
        else:
            seqs = _SEQ.findall(part)
            if not seqs:
                return
        count = len(seqs)
        tally.events += count
        position = self.next_seq
        if seqs == self.expected[position : position + count]:
            self.next_seq = position + count
        else:
            self._check_slowly(seqs)
        self._last_part = part
        if not self.done and self.next_seq >= self.target:
            self.done = True
            tally.complete += 1
            if tally.complete >= tally.target_subscribers:
                tally.completed_at = time.perf_counter()
                if tally.on_complete is not None:
                    tally.on_complete()

    def _check_slowly(self, seqs: list[bytes]) -> None:
        tally = self.tally
        position = self.next_seq
        for raw in seqs:
            seq = int(raw)
            if seq == position:
                position += 1
            elif seq < position:
                tally.duplicates += 1
            else:
                tally.out_of_order += 1
                tally.lost += seq - position
                position = seq + 1
        self.next_seq = position

    @property
    def last_id(self) -> bytes:
        """The id of the last event received (what a reconnect sends as Last-Event-ID); found
        when asked, not on every read."""
        part = self._last_part
        at = part.rfind(b"id: ")
        while at > 0 and part[at - 1] != 10:
            at = part.rfind(b"id: ", 0, at)
        if at < 0:
            return b""
        end = part.find(b"\n", at)
        return part[at + 4 : end].rstrip(b"\r")

    # -- control ------------------------------------------------------------------------------

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


def stream_request(path: str, host: str, last_event_id: bytes = b"") -> bytes:
    resume = b"Last-Event-ID: %s\r\n" % last_event_id if last_event_id else b""
    return (
        b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
        b"Cache-Control: no-cache\r\n%s\r\n"
    ) % (path.encode(), host.encode(), resume)
