"""Peers that stop reading while their kernel keeps the connection up: a client process that is
SIGSTOPped (its kernel acknowledges what fits in its receive buffer, then advertises a zero
window, and answers every probe), and one that reads nothing at all.

Neither makes the relay's socket push back soon: Linux's send buffer takes megabytes first,
and heartbeats never fill it. The relay counts that buffer (SIOCOUTQ) against
`stream.queue_bytes` and drops a stream whose client acknowledged nothing for
`stream.write_timeout`, and counts it. (Linux 5.11 and later also end a connection whose peer
kept a zero window past the socket's TCP_USER_TIMEOUT, which the relay sets to the write
timeout: the stopped client's streams would go on such a kernel too, but unseen by the relay,
and on older kernels never. The counters say that the relay dropped them.) Real relay processes
and real client processes on loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from tests.support.app import parse_metrics
from tests.support.process import Relay, start_relay

WRITE_TIMEOUT = 1.0
PATIENCE = 10 * WRITE_TIMEOUT
STOPPED_STREAMS = 50
PADDING = "x" * 4000

# A client process: opens N streams with small receive buffers, reads each response's head,
# says "ready", then reads nothing (the test stops it with SIGSTOP, or lets it sleep).
READER = """
import socket, sys, time
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
socks = []
for _ in range(count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: relay\\r\\n\\r\\n".encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += s.recv(1)
    socks.append(s)
print("ready", flush=True)
time.sleep(3600)
"""


@contextlib.contextmanager
def relay_process(**settings: str) -> Iterator[Relay]:
    env = {f"PROGRESS_RELAY_{key.upper()}": value for key, value in settings.items()}
    relay = start_relay(env=env)
    try:
        yield relay
    finally:
        relay.close()


@contextlib.contextmanager
def reader_process(relay: Relay, path: str, count: int) -> Iterator[subprocess.Popen[str]]:
    port = relay.base_url.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [sys.executable, "-c", READER, port, path, str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.communicate(timeout=5)


def streams_open(relay: Relay) -> int:
    streams: int = httpx.get(f"{relay.base_url}/healthz").json()["streams"]
    return streams


def metrics(relay: Relay) -> dict[str, float]:
    return parse_metrics(httpx.get(f"{relay.base_url}/metrics").text)


def publish(relay: Relay, job: str, count: int) -> None:
    events = [{"event": "log", "data": {"message": f"{i} {PADDING}"}} for i in range(count)]
    response = httpx.post(f"{relay.base_url}/v1/jobs/{job}/events", json={"events": events})
    assert response.status_code == 200, response.text


def wait_for_streams(relay: Relay, count: int) -> float:
    """Seconds until the relay holds ``count`` streams (AssertionError after PATIENCE)."""
    started = time.monotonic()
    while (held := streams_open(relay)) != count:
        assert time.monotonic() - started < PATIENCE, f"{held} streams still open"
        time.sleep(0.05)
    return time.monotonic() - started


def test_streams_of_a_stopped_client_are_dropped_though_only_heartbeats_wait() -> None:
    with relay_process(stream_write_timeout=str(WRITE_TIMEOUT), stream_heartbeat="0.2") as relay:
        httpx.post(f"{relay.base_url}/v1/jobs", json={"id": "stopped"})
        with reader_process(
            relay, "/v1/jobs/stopped/stream?replay=none", STOPPED_STREAMS
        ) as reader:
            wait_for_streams(relay, STOPPED_STREAMS)
            os.kill(reader.pid, signal.SIGSTOP)
            # 64 KB each: more than the stopped client's receive buffers take, far less than
            # would make the relay's sockets push back. From then on only heartbeats come.
            publish(relay, "stopped", 16)
            released = wait_for_streams(relay, 0)
        counted = metrics(relay)
    print(
        f"\n{STOPPED_STREAMS} streams of a stopped client released {released:.2f} s after the "
        f"last event (write_timeout {WRITE_TIMEOUT} s)"
    )
    assert counted["progress_relay_write_timeouts_total"] == STOPPED_STREAMS
    assert counted["progress_relay_subscribers_dropped_total"] == STOPPED_STREAMS


def test_a_client_that_never_reads_is_dropped_at_the_bound_kernel_included() -> None:
    bound = 64 * 1024
    with relay_process(
        stream_queue_bytes=str(bound), stream_write_timeout="600", stream_heartbeat="600"
    ) as relay:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = relay.base_url.removeprefix("http://").split(":")
        client.connect((host, int(port)))
        client.sendall(b"GET /v1/jobs/deaf/stream?replay=none HTTP/1.1\r\nHost: relay\r\n\r\n")
        wait_for_streams(relay, 1)
        published = 0
        for _ in range(16):  # ~1 MB of logs (never conflated), 64 KB at a time
            publish(relay, "deaf", 16)
            published += 16 * len(PADDING)
        wait_for_streams(relay, 0)
        counted = metrics(relay)
        # What the client can still read of it, now that it reads.
        client.settimeout(1.0)
        received = 0
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                received += len(chunk)
        client.close()
    print(f"\npublished {published} bytes; the client that read nothing could read {received}")
    assert counted["progress_relay_subscribers_dropped_total"] == 1
    assert counted["progress_relay_write_timeouts_total"] == 0  # the bound, not time
    # Its receive buffer, what the relay had waiting for it, and no more.
    assert received < 4 * bound
