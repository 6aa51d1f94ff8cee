"""Slow clients: bounded memory, conflated progress, dropped and resumed, write timeouts.

The relay runs as a real process; the slow client is a raw socket with a small receive buffer
that stops reading after the response headers, so the relay's writes to it really block.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from progress_relay.core.counts import RelayCounts
from progress_relay.core.flusher import Flusher
from progress_relay.core.subscriber import Subscriber
from progress_relay.http.keys import HUB
from progress_relay.wire.events import Event
from tests.support.app import MakeClient, parse_metrics
from tests.support.process import Relay, start_relay
from tests.support.sse_client import Frame, SSEReader, parse_frame

EVENTS = int(__import__("os").environ.get("SLOW_EVENTS", "10000"))
BATCH = 20
PADDING = "x" * 4000  # 10,000 events of ~4 KB: 40 MB through the relay


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def relay_process(**env: str) -> Iterator[Relay]:
    relay = start_relay(env={f"PROGRESS_RELAY_{key.upper()}": value for key, value in env.items()})
    try:
        yield relay
    finally:
        relay.close()


class StalledClient:
    """Opens a stream, reads nothing more than it must, and can read the rest later."""

    def __init__(self, base_url: str, path: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.sock.setblocking(False)

    async def read_all(self, idle: float = 1.5) -> tuple[list[Frame], str]:
        """Read until the relay ends the connection or sends nothing for ``idle`` seconds; the
        frames, and how it ended: "closed", "reset" or "idle" (still open)."""
        loop = asyncio.get_running_loop()
        data = b""
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await loop.sock_recv(self.sock, 65536)
            except TimeoutError:
                ended = "idle"
                break
            except ConnectionResetError:
                ended = "reset"
                break
            if not chunk:
                ended = "closed"
                break
            data += chunk
        self.sock.close()
        return _frames_of_chunked_body(data), ended


def _frames_of_chunked_body(data: bytes) -> list[Frame]:
    """The complete SSE frames of an HTTP/1.1 chunked response, possibly cut anywhere."""
    _, _, body = data.partition(b"\r\n\r\n")
    payload = b""
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0 or len(rest) < size:
            payload += rest[:size]
            break
        payload += rest[:size]
        body = rest[size + 2 :]
    raws = payload.split(b"\n\n")[:-1]  # the last piece is an incomplete frame, or empty
    return [parse_frame(raw + b"\n\n") for raw in raws if not raw.startswith(b":")]


async def read_everything(
    session: aiohttp.ClientSession, url: str, count: int, received: list[tuple[Frame, float]]
) -> None:
    async with session.get(url) as response:
        assert response.status == 200
        reader = SSEReader(response)
        while len(received) < count:
            [frame] = await reader.events(1)
            if frame.event is not None:
                received.append((frame, time.monotonic()))


@contextlib.asynccontextmanager
async def sampling_rss(pid: int) -> AsyncIterator[list[int]]:
    samples = [rss_bytes(pid)]

    async def sample() -> None:
        while True:
            samples.append(rss_bytes(pid))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_all(
    session: aiohttp.ClientSession, base: str, job: str, events: list[dict[str, Any]]
) -> tuple[list[str], list[float]]:
    ids: list[str] = []
    sent_at: list[float] = []
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        now = time.monotonic()
        async with session.post(f"{base}/v1/jobs/{job}/events", json={"events": batch}) as r:
            assert r.status == 200, await r.text()
            ids += (await r.json())["ids"]
        sent_at += [now] * len(batch)
    return ids, sent_at


async def scrape_metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return parse_metrics(text)


def progress_events(n: int) -> list[dict[str, Any]]:
    return [
        {"event": "progress", "data": {"percent": i * 100 // n, "message": f"{i} {PADDING}"}}
        for i in range(1, n + 1)
    ]


def delays(received: list[tuple[Frame, float]], sent_at: dict[str, float]) -> float:
    return statistics.median(at - sent_at[frame.id or ""] for frame, at in received)


async def test_a_stalled_client_gets_conflated_progress_in_bounded_memory() -> None:
    """10,000 progress events while one client reads nothing: the relay's memory stays bounded,
    two readers get every event, and the stalled one gets the latest state when it reads."""
    with relay_process(
        stream_queue_frames="100000", stream_queue_bytes="1048576", stream_write_timeout="120"
    ) as relay:
        base = relay.base_url
        events = progress_events(EVENTS)
        async with aiohttp.ClientSession() as session:
            # The same readers without a stalled client first, to compare their timing with
            # (printed, not asserted: this machine is too noisy for a threshold).
            calm: list[list[tuple[Frame, float]]] = [[], []]
            calm_readers = [
                asyncio.create_task(
                    read_everything(session, f"{base}/v1/jobs/calm/stream", EVENTS // 5, got)
                )
                for got in calm
            ]
            await asyncio.sleep(0.2)
            calm_ids, calm_sent = await publish_all(session, base, "calm", events[: EVENTS // 5])
            await asyncio.wait_for(asyncio.gather(*calm_readers), 60)
            calm_delay = delays(calm[0], dict(zip(calm_ids, calm_sent, strict=True)))
            await session.post(f"{base}/v1/jobs", json={"id": "big"})
            stalled = StalledClient(base, "/v1/jobs/big/stream?replay=none")
            await asyncio.sleep(0.2)
            fast: list[list[tuple[Frame, float]]] = [[], []]
            readers = [
                asyncio.create_task(
                    read_everything(session, f"{base}/v1/jobs/big/stream", EVENTS, got)
                )
                for got in fast
            ]
            await asyncio.sleep(0.2)
            async with sampling_rss(relay.process.pid) as rss:
                ids, sent = await publish_all(session, base, "big", events)
                await asyncio.wait_for(asyncio.gather(*readers), 60)
            stalled_frames, ended = await stalled.read_all()
            metrics = await scrape_metrics(session, base)
        growth = max(rss) - rss[0]
        sent_at = dict(zip(ids, sent, strict=True))
        print(
            f"\nrss growth {growth / 2**20:.1f} MiB over {len(rss)} samples; "
            f"stalled client got {len(stalled_frames)} of {EVENTS} frames; "
            f"readers' median delay {delays(fast[0], sent_at) * 1000:.1f} ms beside it, "
            f"{calm_delay * 1000:.1f} ms without it"
        )
    for got in fast:
        assert [frame.id for frame, _ in got] == ids  # every event, in order, once
    # Without the byte bound and conflation the stalled stream alone would hold ~40 MB.
    assert growth < 30 * 2**20
    assert ended == "idle"  # conflated, never dropped: still connected
    stalled_ids = [frame.id for frame in stalled_frames if frame.event == "progress"]
    positions = [ids.index(event_id) for event_id in stalled_ids]
    assert positions == sorted(set(positions))  # strictly increasing ids, no repeats
    assert stalled_ids[-1] == ids[-1]  # it ends at the latest state
    assert len(stalled_ids) < EVENTS // 10  # most progress was conflated away
    assert metrics["progress_relay_frames_conflated_total"] > EVENTS // 2
    assert metrics["progress_relay_subscribers_dropped_total"] == 0


async def test_a_stalled_client_past_the_bound_is_dropped_and_resumes() -> None:
    """Logs are never conflated: past stream.queue_bytes the stalled client is dropped, and
    reconnecting with its last id it continues exactly, or with a `reset` when the ring has
    moved on."""
    with relay_process(
        stream_queue_frames="100000", stream_queue_bytes="1048576", jobs_ring_events="1000"
    ) as relay:
        base = relay.base_url
        events = [
            {"event": "log", "data": {"message": f"{i} {PADDING}"}} for i in range(EVENTS - 1)
        ]
        events.append({"event": "complete", "data": {"message": "done"}})
        async with aiohttp.ClientSession() as session:
            await session.post(f"{base}/v1/jobs", json={"id": "logs"})
            stalled = StalledClient(base, "/v1/jobs/logs/stream")
            await asyncio.sleep(0.2)
            fast: list[tuple[Frame, float]] = []
            reader = asyncio.create_task(
                read_everything(session, f"{base}/v1/jobs/logs/stream", EVENTS, fast)
            )
            await asyncio.sleep(0.2)
            async with sampling_rss(relay.process.pid) as rss:
                ids, _ = await publish_all(session, base, "logs", events)
                await asyncio.wait_for(reader, 60)
            first, ended = await stalled.read_all()
            metrics = await scrape_metrics(session, base)
            assert metrics["progress_relay_subscribers_dropped_total"] == 1
            assert metrics["progress_relay_frames_conflated_total"] == 0  # logs never are
            assert ended in ("closed", "reset")  # the relay gave up on it
            assert len(first) < EVENTS
            seen = [frame.id for frame in first if frame.event == "log"]
            assert seen == ids[: len(seen)]  # what it did get was exact
            headers = {"Last-Event-ID": seen[-1]} if seen else {}
            async with session.get(f"{base}/v1/jobs/logs/stream", headers=headers) as response:
                rest = [
                    frame
                    for frame in await SSEReader(response).until_end(timeout=20)
                    if frame.event
                ]
        growth = max(rss) - rss[0]
    assert [frame.id for frame, _ in fast] == ids
    assert growth < 30 * 2**20
    if rest[0].event == "reset":
        # The ring (1,000 events) no longer holds what it missed: the snapshot, then the events
        # after the position the reset names.
        assert rest[0].json["status"] in ("running", "completed")
        after = ids.index(rest[0].id or "")
        assert [frame.id for frame in rest[1:]] == ids[after + 1 :]
    else:
        assert [frame.id for frame in rest] == ids[len(seen) :]
    assert rest[-1].event in ("complete", "reset")


def _event(job: str, seq: int, name: str) -> Event:
    return Event(job, seq, f"e-{seq}", name, b"{}")


def test_conflation_replaces_only_waiting_progress_of_the_same_job_and_keeps_id_order() -> None:
    subscriber = Subscriber(
        ["a", "b"],
        multi=True,
        max_frames=100,
        max_bytes=1 << 30,
        counts=RelayCounts(),
        flusher=Flusher(),
    )
    subscriber.start([], {}, [])
    subscriber.push([_event("a", 1, "progress")])  # not under pressure: kept
    subscriber.writing = True  # the socket pushes back from here on
    subscriber.push([_event("a", 2, "progress"), _event("a", 3, "log")])
    subscriber.push([_event("b", 4, "progress")])
    subscriber.push([_event("a", 5, "progress"), _event("a", 6, "progress")])
    subscriber.push([_event("b", 7, "log"), _event("b", 8, "progress")])
    subscriber.push([_event("a", 9, "complete")])
    chunk = asyncio.run(subscriber.next_chunk())
    assert chunk is not None
    ids = [parse_frame(raw + b"\n\n").id for raw in chunk.split(b"\n\n")[:-1]]
    # 1 was written before the pressure; 2 and 5 were replaced by 6, 4 by 8.
    assert ids == ["e-1", "e-3", "e-6", "e-7", "e-8", "e-9"]
    assert subscriber.counts.conflated == 3


class _KernelBuffer:
    """A Socket that never sends: only its count of unsent bytes matters here."""

    framed = True
    unsent = 0
    aborted = False

    def write(self, piece: bytes) -> None:
        self.unsent += len(piece)

    def write_framed(self, data: bytes) -> None:
        self.unsent += len(data)

    def beat(self, comment: bytes) -> None:
        self.unsent += len(comment)

    def pushing_back(self) -> bool:
        return False

    def buffered(self) -> int:
        return self.unsent

    def written(self) -> int:
        return 0

    def abort(self) -> None:
        self.aborted = True


def test_the_byte_bound_counts_the_socket_buffer_and_spares_an_idle_subscriber() -> None:
    subscriber = Subscriber(
        ["a"], multi=False, max_frames=100, max_bytes=1000, counts=RelayCounts(), flusher=Flusher()
    )
    subscriber.start([], {}, [])
    kernel = _KernelBuffer()
    subscriber.connect(kernel)
    big = Event("a", 1, "e-1", "log", b'"' + b"x" * 2000 + b'"')
    subscriber.push([big])  # nothing waiting and not pushed back: a whole publish is taken
    assert not subscriber.dropped
    asyncio.run(subscriber.next_chunk())
    subscriber.writing, kernel.unsent = True, 900
    subscriber.push([Event("a", 2, "e-2", "log", b'"' + b"y" * 200 + b'"')])
    assert subscriber.dropped  # 900 in the socket + ~230 waiting > 1000
    assert kernel.aborted  # a handler blocked on a client that reads nothing cannot see a drop


@pytest.mark.memory_only
async def test_a_write_that_blocks_too_long_drops_the_stream(make_client: MakeClient) -> None:
    client = await make_client(
        stream={"write_timeout": 0.5, "queue_frames": 100000, "queue_bytes": 1 << 30}
    )
    hub = client.app[HUB]
    stalled = StalledClient(f"http://127.0.0.1:{client.port}", "/v1/jobs/w/stream?replay=none")
    for _ in range(100):
        if hub.streams == 1:
            break
        await asyncio.sleep(0.02)
    assert hub.streams == 1
    big = [{"event": "log", "data": {"message": PADDING * 4}} for _ in range(50)]
    sent = 0
    # Publish until the relay's write to the stalled client blocks (its socket is full).
    while not any(s.writing for s in hub._topics["w"].subscribers):
        response = await client.post("/v1/jobs/w/events", json={"events": big})
        assert response.status == 200
        sent += 1
        assert sent < 200
        await asyncio.sleep(0.01)
    started = time.monotonic()
    for _ in range(300):
        if hub.streams == 0:
            break
        await asyncio.sleep(0.02)
    assert hub.streams == 0, "the blocked stream was not dropped"
    assert hub.counts.write_timeouts == 1
    print(f"\ndropped {time.monotonic() - started:.2f} s after its write blocked")
    _, ended = await stalled.read_all()
    assert ended in ("closed", "reset")
