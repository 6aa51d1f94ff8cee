"""Connections a hostile client holds: idle, dribbling its head, dribbling a body, by the
hundred, until the relay runs out of file descriptors; and one address taking every stream.

Real relay processes with second-long timeouts, real sockets on loopback. Each test bounds its
own wait, at several times the timeout it checks; none judges a speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from progress_relay.http.keys import HUB
from tests.support.app import MakeClient, error_of
from tests.support.process import ENTRY_POINT, Relay, free_port, run_relay, start_relay

# The relay's bounds in these tests (server.header_timeout and so on), in seconds.
HEAD = 1.0
BODY = 1.0
IDLE = 1.5
# How long a test waits for the relay to let a connection go: the bound, and ample slack.
PATIENCE = 10.0
SLOWLORIS = 200


@contextlib.contextmanager
def relay_process(**settings: str) -> Iterator[Relay]:
    env = {f"PROGRESS_RELAY_{key.upper()}": value for key, value in settings.items()}
    relay = start_relay(env=env)
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    with relay_process(
        server_header_timeout=str(HEAD),
        server_body_timeout=str(BODY),
        server_keepalive_timeout=str(IDLE),
    ) as process:
        yield process


def address(relay: Relay) -> tuple[str, int]:
    host, port = relay.base_url.removeprefix("http://").split(":")
    return host, int(port)


async def connect(relay: Relay) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address(relay))


async def until_closed(reader: asyncio.StreamReader, patience: float = PATIENCE) -> bytes:
    """Everything the relay sends until it closes the connection (TimeoutError if it does not
    within ``patience``)."""
    received = b""
    async with asyncio.timeout(patience):
        while chunk := await reader.read(65536):
            received += chunk
    return received


def json_error(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


async def test_an_idle_keep_alive_connection_is_closed(relay: Relay) -> None:
    reader, writer = await connect(relay)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    rest = await until_closed(reader)
    print(f"\nidle connection closed {time.monotonic() - started:.2f} s after its request")
    assert b"HTTP/1.1" not in rest  # nothing more was answered: it was just closed
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed(relay: Relay) -> None:
    reader, writer = await connect(relay)
    assert await until_closed(reader) == b""
    writer.close()


async def test_dribbled_heads_get_408_and_are_closed_by_the_hundred(relay: Relay) -> None:
    """Slowloris: SLOWLORIS connections each send a header byte every 0.2 s forever."""

    async def dribble(index: int) -> tuple[bytes, float]:
        reader, writer = await connect(relay)
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow-" + str(index).encode())
        received = asyncio.create_task(until_closed(reader))
        try:
            while not received.done():
                writer.write(b"a")
                await asyncio.sleep(0.2)
            return received.result(), time.monotonic() - started
        finally:
            writer.close()

    outcomes = await asyncio.gather(*(dribble(i) for i in range(SLOWLORIS)))
    held = sorted(seconds for _, seconds in outcomes)
    print(f"\n{SLOWLORIS} slowloris connections released after {held[0]:.2f}-{held[-1]:.2f} s")
    for response, _ in outcomes:
        status, body = json_error(response)
        assert status == 408
        assert body["error"]["code"] == "request_timeout"
        assert "server.header_timeout" in body["error"]["message"]
    assert (await asyncio.to_thread(httpx.get, f"{relay.base_url}/healthz")).status_code == 200


async def test_a_dribbled_body_gets_408_and_changes_nothing(relay: Relay) -> None:
    reader, writer = await connect(relay)
    writer.write(
        b"POST /v1/jobs/slow-body/events HTTP/1.1\r\nHost: relay\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"event":"log","data":{"message":"'
    )
    received = asyncio.create_task(until_closed(reader))
    while not received.done():
        writer.write(b"x")
        await asyncio.sleep(0.1)
    status, body = json_error(received.result())
    writer.close()
    assert status == 408
    assert body["error"]["code"] == "request_timeout"
    assert "server.body_timeout" in body["error"]["message"]
    unchanged = await asyncio.to_thread(httpx.get, f"{relay.base_url}/v1/jobs/slow-body")
    assert unchanged.status_code == 404


async def test_a_complete_request_on_a_kept_connection_is_not_cut(relay: Relay) -> None:
    """The bounds count from a request's first byte: one that keeps sending whole requests
    within them is served however long it stays."""
    reader, writer = await connect(relay)
    deadline = time.monotonic() + 2 * HEAD + 1
    served = 0
    while time.monotonic() < deadline:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
        await reader.readexactly(length)
        served += 1
        await asyncio.sleep(HEAD / 2)
    writer.close()
    assert served >= 4


# -- running out of file descriptors ----------------------------------------------------------

SOFT, HARD = 48, 96  # the relay's open-file limits as it starts


def start_limited_relay() -> Relay:
    port = free_port()
    command = [
        "prlimit",
        f"--nofile={SOFT}:{HARD}",
        str(ENTRY_POINT),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return run_relay(command, dict(os.environ), f"http://127.0.0.1:{port}")


def open_file_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-file limit")


def logged(relay: Relay, line: str) -> None:
    """Wait for the relay to log ``line`` (its log is read by a thread)."""
    deadline = time.monotonic() + PATIENCE
    while line not in relay.log:
        assert time.monotonic() < deadline, relay.log[-2000:]
        time.sleep(0.05)


def healthz_answers(relay: Relay, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{relay.base_url}/healthz", timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


def test_out_of_file_descriptors_one_line_then_healthz_again_once_they_free_up() -> None:
    relay = start_limited_relay()
    held: list[socket.socket] = []
    try:
        assert open_file_limit(relay.process.pid) == HARD  # raised from SOFT at start-up
        logged(relay, f"open-file limit: soft {HARD} (raised from {SOFT}), hard {HARD}")
        # Idle connections until the relay cannot accept one more: it stops reading new ones.
        for _ in range(HARD + 40):
            held.append(socket.create_connection(address(relay)))
        exhausted = time.monotonic()
        assert not healthz_answers(relay)  # waits in the backlog: not accepted
        time.sleep(2)  # accepting is tried again and again meanwhile: no more lines
        for sock in held:
            sock.close()
        held.clear()
        freed = time.monotonic()
        while not healthz_answers(relay):
            assert time.monotonic() - freed < PATIENCE, relay.log[-2000:]
        print(
            f"\nout of descriptors for {freed - exhausted:.1f} s; /healthz answered "
            f"{time.monotonic() - freed:.2f} s after they were freed"
        )
        _, _, log = relay.stop()
    finally:
        for sock in held:
            sock.close()
        relay.close()
    assert log.count("cannot accept new connections: Too many open files") == 1, log[-3000:]
    assert "Traceback" not in log
    assert "accepting connections again" in log
    assert len(log) < 20_000  # not 38 MB


# -- one client, every stream -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def streams(client: Any, forwarded_for: list[str | None]) -> AsyncIterator[list[int]]:
    """Open a stream for each X-Forwarded-For value (None: no header); their statuses."""
    responses = []
    try:
        for value in forwarded_for:
            headers = {} if value is None else {"X-Forwarded-For": value}
            response = await client.get("/v1/jobs/cap/stream?replay=none", headers=headers)
            responses.append(response)
        yield [response.status for response in responses]
    finally:
        for response in responses:
            response.close()


async def no_streams(client: Any) -> None:
    hub = client.app[HUB]
    for _ in range(int(PATIENCE / 0.01)):
        if not hub.streams:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{hub.streams} streams still open")


@pytest.mark.memory_only
async def test_one_address_cannot_take_every_stream(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_streams_per_client": 2})
    async with streams(client, [None, "10.0.0.1", "10.0.0.2"]) as statuses:
        # Nothing is a trusted proxy: X-Forwarded-For is anyone's to write, and ignored.
        assert statuses == [200, 200, 503]
    await no_streams(client)
    async with streams(client, [None, None]) as statuses:
        assert statuses == [200, 200]  # the closed ones no longer count
        refused = await client.get("/v1/jobs/cap/stream?replay=none")
        message = await error_of(refused, 503, "too_many_streams")
        assert "limits.max_streams_per_client" in message
        assert refused.headers["Retry-After"]


@pytest.mark.memory_only
async def test_behind_a_trusted_proxy_the_client_is_the_address_it_appended(
    make_client: MakeClient,
) -> None:
    client = await make_client(
        limits={"max_streams_per_client": 2}, server={"trusted_proxies": ["127.0.0.0/8"]}
    )
    async with streams(
        client,
        [
            "10.0.0.1",
            "10.0.0.1",
            "10.0.0.1",  # a third of the same client: refused
            "10.0.0.2",  # another client behind the same proxy
            "10.0.0.9, 10.0.0.1",  # spoofed on the left; the proxy appended 10.0.0.1
            "2001:db8:1:2::1",
            "2001:db8:1:2::fe",  # the same /64
            "2001:db8:1:2::2",
            None,  # the proxy's own request: the proxy is the client
        ],
    ) as statuses:
        assert statuses == [200, 200, 503, 200, 503, 200, 200, 503, 200]


def test_trusted_proxies_must_be_addresses() -> None:
    from progress_relay.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        load_settings(environ={"PROGRESS_RELAY_SERVER_TRUSTED_PROXIES": "nginx.local"})


# -- the same bounds, served in this process as `serve` serves it ------------------------------


@contextlib.asynccontextmanager
async def served(**sections: dict[str, Any]) -> AsyncIterator[tuple[str, int]]:
    """The relay's app behind ops/listener.py's Site, as ops/server.py runs it."""
    from aiohttp import web

    from progress_relay.http.app import create_app
    from progress_relay.http.keys import CONNECTIONS
    from progress_relay.ops.fds import AcceptErrors
    from progress_relay.ops.listener import Site
    from tests.support.app import make_settings

    app = create_app(make_settings(**sections))
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    site = Site(runner, app[CONNECTIONS], "127.0.0.1", port, backlog=128, errors=AcceptErrors())
    await site.start()
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


FAST = {"header_timeout": 0.5, "body_timeout": 0.5, "keepalive_timeout": 0.8}


async def test_in_process_a_dribbled_head_is_408_and_a_silent_connection_just_closed() -> None:
    async with served(server=FAST) as where:
        dribbler = await asyncio.open_connection(*where)
        silent = await asyncio.open_connection(*where)
        dribbler[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
        status, body = json_error(await until_closed(dribbler[0]))
        assert (status, body["error"]["code"]) == (408, "request_timeout")
        assert await until_closed(silent[0]) == b""
        for _, writer in (dribbler, silent):
            writer.close()


async def test_in_process_long_lines_and_heads_are_json_and_close() -> None:
    from progress_relay.ops.connections import head_limit, line_limit
    from tests.support.app import make_settings

    limits = make_settings().limits
    async with served() as where:
        reader, writer = await asyncio.open_connection(*where)
        writer.write(b"GET /" + b"a" * line_limit(limits))  # no end of line yet
        status, body = json_error(await until_closed(reader))
        assert (status, body["error"]["code"]) == (414, "uri_too_long")
        writer.close()
        reader, writer = await asyncio.open_connection(*where)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        for n in range(head_limit(limits) // 1000 + 2):
            writer.write(b"X-%d: %s\r\n" % (n, b"h" * 990))
        status, body = json_error(await until_closed(reader))
        assert (status, body["error"]["code"]) == (431, "headers_too_large")
        writer.close()


async def test_in_process_kept_and_pipelined_requests_are_served_whole() -> None:
    async with served(server=FAST) as where:
        reader, writer = await asyncio.open_connection(*where)
        body = b'{"event":"progress","data":{"percent":1,"pad":"' + b"p" * 60_000 + b'"}}'
        publish = (
            b"POST /v1/jobs/piped/events HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        # Three publishes with large bodies in one write, each behind the one before.
        writer.write(publish * 3 + b"GET /v1/jobs/piped HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = []
        for _ in range(4):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
            answers.append((head.split()[1], await reader.readexactly(length)))
        assert [status for status, _ in answers] == [b"200"] * 4, answers
        assert json.loads(answers[-1][1])["last_event_id"].endswith("-3")
        await asyncio.sleep(0.3)  # shorter than the keep-alive: still open
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_in_process_a_response_its_client_never_reads_is_cut() -> None:
    """Not a stream: a job list of a few megabytes to a client that reads nothing."""
    async with served(stream={"write_timeout": 0.5}) as (host, port):
        meta = {"pad": "m" * 60_000}
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
            for n in range(100):
                created = await http.post("/v1/jobs", json={"id": f"big-{n}", "meta": meta})
                assert created.status_code == 201
        deaf = socket.socket()
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(deaf, (host, port))
        await loop.sock_sendall(deaf, b"GET /v1/jobs?limit=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(3)  # the write blocks, and 1.5 s later the connection is cut
        received = 0
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(PATIENCE):
                while chunk := await loop.sock_recv(deaf, 65536):
                    received += len(chunk)
        deaf.close()
        assert received < 100 * 60_000  # cut short: it never got the whole list
