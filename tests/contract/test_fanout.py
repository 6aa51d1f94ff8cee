"""Fan-out: many tabs of one job, one stream for many jobs, and slow subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tests.support.app import MakeClient, publish, publish_many, stream_opener


async def test_tabs_of_one_job_receive_identical_bytes(client, open_stream) -> None:
    await publish(client, "tabs", "progress", {"percent": 1})
    async with contextlib.AsyncExitStack() as stack:
        readers = [
            (await stack.enter_async_context(open_stream("/v1/jobs/tabs/stream")))[1]
            for _ in range(5)
        ]
        for reader in readers:
            await reader.events(1)
        await publish_many(client, "tabs", [("log", {"message": f"line {i}"}) for i in range(20)])
        await publish(client, "tabs", "complete", {"result": {"rows": 3}})
        streams = [[f.raw for f in await reader.until_end()] for reader in readers]
    assert len(streams[0]) == 21
    assert all(stream == streams[0] for stream in streams)


async def test_multi_job_stream_orders_tags_and_resumes_across_three_jobs(
    client, open_stream
) -> None:
    path = "/v1/stream?job=a&job=b&job=c"
    published: list[tuple[str, str]] = []
    async with open_stream(path) as (response, reader):
        assert response.status == 200
        for i in range(3):
            for job in "abc":
                published.append((job, await publish(client, job, "progress", {"percent": i})))
        frames = await reader.events(9)
    assert [(f.json["job"], f.id) for f in frames] == published
    assert frames[0].raw.endswith(b'data: {"job":"a","data":{"percent":0}}\n\n')
    # Missed while away: events of all three jobs, interleaved; resume with the one last id.
    missed = [(job, await publish(client, job, "log", {"message": job})) for job in "cab"]
    async with open_stream(path, headers={"Last-Event-ID": frames[-1].id}) as (_, reader):
        again = await reader.events(3)
    assert [(f.json["job"], f.id) for f in again] == missed


async def test_multi_job_stream_mixes_reset_and_exact_replay_in_id_order(
    make_client: MakeClient,
) -> None:
    client = await make_client(jobs={"ring_events": 3})
    open_stream = stream_opener(client)
    start = await publish(client, "x", "progress", {"percent": 0})
    await publish_many(client, "y", [("progress", {"percent": p}) for p in range(6)])  # overflows
    x_after = await publish(client, "x", "progress", {"percent": 1})
    z_after = await publish(client, "z", "log", {"message": "z"})
    async with open_stream("/v1/stream?job=x&job=y&job=z", headers={"Last-Event-ID": start}) as (
        _,
        reader,
    ):
        frames = await reader.events(3)
    assert [(f.event, f.json["job"]) for f in frames] == [
        ("reset", "y"),
        ("progress", "x"),
        ("log", "z"),
    ]
    assert frames[0].json["data"]["percent"] == 5
    assert [f.id for f in frames[1:]] == [x_after, z_after]
    seqs = [int(f.id.rsplit("-", 1)[1]) for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_a_reset_is_not_preceded_by_events_its_id_would_skip(make_client: MakeClient) -> None:
    """y must be reset (its event 2 left the ring); x has an event (3) below y's position (6).
    Sent as x:3 then reset y:6, a client cut off after x:3 resumes from 3, where y's retained
    history looks complete, and y's event 2 is lost without a reset. So x is reset too, first,
    and only the last reset carries an id."""
    client = await make_client(jobs={"ring_events": 3})
    start = await publish(client, "x", "progress", {"percent": 1})
    await publish(client, "y", "log", {"message": "lost from the ring"})
    await publish(client, "x", "progress", {"percent": 3})
    y_ids = await publish_many(client, "y", [("progress", {"percent": p}) for p in (4, 5, 6)])
    path = "/v1/stream?job=x&job=y&job=z"
    for _ in range(2):  # the second time as a client cut off after the first reset would
        async with stream_opener(client)(path, headers={"Last-Event-ID": start}) as (_, reader):
            frames = await reader.events(2)
        assert [(f.event, f.json["job"], f.id) for f in frames] == [
            ("reset", "x", None),
            ("reset", "y", y_ids[-1]),
        ]
        assert frames[0].json["data"]["percent"] == 3
        assert frames[1].json["data"]["percent"] == 6
    after = await publish(client, "z", "log", {"message": "z"})
    async with stream_opener(client)(path, headers={"Last-Event-ID": y_ids[-1]}) as (_, reader):
        assert [(f.event, f.id) for f in await reader.events(1)] == [("log", after)]


async def test_multi_job_stream_ends_when_all_jobs_end_then_204(client, open_stream) -> None:
    path = "/v1/stream?job=d1&job=d2"
    async with open_stream(path) as (_, reader):
        await publish(client, "d1", "complete", {})
        await publish(client, "d2", "progress", {"percent": 50})
        last = await publish(client, "d2", "cancelled", {"message": "stop"})
        frames = await reader.until_end()
    assert [(f.json["job"], f.event) for f in frames] == [
        ("d1", "complete"),
        ("d2", "progress"),
        ("d2", "cancelled"),
    ]
    response = await client.get(path, headers={"Last-Event-ID": last})
    assert response.status == 204


async def test_multi_job_stream_bad_requests(client) -> None:
    assert (await client.get("/v1/stream")).status == 400
    response = await client.get("/v1/stream?job=ok&job=-bad")
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_job_id"
    many = "&".join(f"job=j{i}" for i in range(101))
    response = await client.get(f"/v1/stream?{many}")
    assert response.status == 413
    assert "at most 100" in (await response.json())["error"]["message"]


async def open_unread_stream(
    port: int, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that asks for a stream and then does not read: a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def test_a_slow_subscriber_is_dropped_and_resumes_without_slowing_others(
    make_client: MakeClient,
) -> None:
    client = await make_client(stream={"queue_frames": 10}, limits={"max_batch_events": 10})
    open_stream = stream_opener(client)
    first = await publish(client, "slow", "progress", {"percent": 0})
    big = "x" * 30000
    slow_reader, slow_writer = await open_unread_stream(client.port, "/v1/jobs/slow/stream")
    sent: list[str] = [first]
    async with open_stream("/v1/jobs/slow/stream") as (_, fast):
        received = [f.id for f in await fast.events(1)]
        for _ in range(200):
            snapshot = await (await client.get("/v1/jobs/slow")).json()
            if snapshot["subscribers"] == 1:
                break
            ids = await publish_many(client, "slow", [("content", {"text": big})] * 10)
            sent.extend(ids)
            received.extend(f.id for f in await fast.events(len(ids), timeout=10))
        # The relay dropped the subscriber that never reads instead of buffering without
        # bound; the one that reads got every event.
        assert snapshot["subscribers"] == 1, "the slow subscriber was never dropped"
        assert received == sent
    # The dropped connection ends; whatever the slow client got, it resumes from its last id:
    # exactly the rest, or a reset at the newest position when the ring no longer has them.
    head = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(slow_reader.read(1 << 16), 10):
            head += chunk
    slow_writer.close()
    with contextlib.suppress(ConnectionError):
        await slow_writer.wait_closed()
    ids_seen = [line[4:].decode() for line in head.split(b"\n") if line.startswith(b"id: ")]
    last = ids_seen[-1] if ids_seen else first
    assert ids_seen == sent[: len(ids_seen)]
    async with open_stream("/v1/jobs/slow/stream", headers={"Last-Event-ID": last}) as (_, again):
        frame = (await again.events(1, timeout=10))[0]
        if frame.event == "reset":
            assert frame.id == sent[-1]
        else:
            missing = len(sent) - sent.index(last) - 2
            rest = [frame.id, *(f.id for f in await again.events(missing, timeout=10))]
            assert rest == sent[sent.index(last) + 1 :]
