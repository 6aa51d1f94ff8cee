"""Helpers of the SDK and CLI tests: real relay processes on either broker, and a TCP proxy
that can lose a response or cut every connection (what a flaky network does)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.process import Relay as RelayProcess
from tests.support.process import start_relay
from tests.support.redis_server import RedisServer

# Every event of a test stays in history (the coalescing test publishes 1,000 logs).
RELAY_ENV = {
    "PROGRESS_RELAY_JOBS_RING_EVENTS": "5000",
    "PROGRESS_RELAY_JOBS_RING_BYTES": str(16 * 1024 * 1024),
    "PROGRESS_RELAY_STREAM_HEARTBEAT": "1",
    "PROGRESS_RELAY_LIMITS_PUBLISH_BURST": "100000",
    "PROGRESS_RELAY_LIMITS_PUBLISH_RATE": "100000",
}


def broker_env(broker: str, redis: RedisServer | None) -> dict[str, str]:
    if broker == "memory":
        return {"PROGRESS_RELAY_BROKER_URL": "memory://"}
    assert redis is not None
    return {
        "PROGRESS_RELAY_BROKER_URL": redis.url,
        "PROGRESS_RELAY_BROKER_KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}:",
    }


@dataclass
class RunningRelay:
    """A relay process and how to start it again (on the same port, same broker)."""

    broker: str
    env: dict[str, str]
    port: int
    process: RelayProcess
    extra: list[RelayProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.process.base_url

    def restart(self, *, kill: bool = True, pause: float = 0.0) -> None:
        if kill:
            self.process.process.kill()
        else:
            self.process.process.terminate()
        self.process.wait(10)
        time.sleep(pause)
        self.process = start_relay(env=self.env, port=self.port)

    def close(self) -> None:
        self.process.close()


def launch(broker: str, redis: RedisServer | None, **env: str) -> RunningRelay:
    full = {**RELAY_ENV, **broker_env(broker, redis), **env}
    process = start_relay(env=full)
    port = int(process.base_url.rsplit(":", 1)[1])
    return RunningRelay(broker, full, port, process)


@pytest.fixture(scope="module", params=["memory", "redis"])
def shared_relay(request: pytest.FixtureRequest) -> Iterator[RunningRelay]:
    """One relay process per module and broker; tests use their own job ids."""
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    relay = launch(request.param, redis)
    yield relay
    relay.close()


@pytest.fixture(params=["memory", "redis"])
def own_relay(request: pytest.FixtureRequest) -> Iterator[Callable[..., RunningRelay]]:
    """``own_relay(**env)``: a relay process of the test's own, on the test's broker."""
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    started: list[RunningRelay] = []

    def start(**env: str) -> RunningRelay:
        relay = launch(request.param, redis, **env)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.close()


def job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def history(url: str, job: str) -> list[dict[str, Any]]:
    """Every retained event of ``job``, read with an independent client."""
    events: list[dict[str, Any]] = []
    after: str | None = None
    with httpx.Client(base_url=url, timeout=10) as http:
        while True:
            params = {"limit": "1000"} | ({"after": after} if after else {})
            page = http.get(f"/v1/jobs/{job}/events", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            events.extend(body["events"])
            if not body["has_more"]:
                return events
            after = body["next_after"]


def snapshot(url: str, job: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/jobs/{job}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds: a bound on how long a test may hang, not a timing claim."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proxy:
    """A TCP proxy in front of ``upstream_port`` on 127.0.0.1.

    - ``lose_next_response(marker)``: the next request containing ``marker`` reaches the relay,
      but its connection is closed before any byte of the answer reaches the client;
    - ``answer_next(raw, marker)``: the next request containing ``marker`` gets ``raw`` (an HTTP
      response) from the proxy itself and never reaches the relay;
    - ``cut()``: close every open connection (a network drop);
    - ``freeze()``: open connections stay open but carry nothing more to the client (a peer
      gone without a FIN: a laptop off the network);
    - ``requests``: request lines seen, in order.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self._lose: bytes | None = None
        self._answer: tuple[bytes, bytes] | None = None
        self.lost = 0
        self.answered = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._states: list[dict[str, bool]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_next_response(self, marker: bytes) -> None:
        with self._lock:
            self._lose = marker

    def answer_next(self, raw: bytes, marker: bytes) -> None:
        with self._lock:
            self._answer = (marker, raw)

    def freeze(self) -> None:
        with self._lock:
            for state in self._states:
                state["frozen"] = True

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        _close(self._server)
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            _close(client)
            return
        with self._lock:
            self._sockets |= {client, upstream}
        state = {"losing": False, "frozen": False}
        with self._lock:
            self._states.append(state)
        threading.Thread(
            target=self._downstream, args=(upstream, client, state), daemon=True
        ).start()
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                if self._intercept(chunk, client, upstream, state):
                    break  # answered by the proxy, which then closes the connection
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(upstream)
            _close(client)

    def _intercept(
        self, chunk: bytes, client: socket.socket, upstream: socket.socket, state: dict[str, bool]
    ) -> bool:
        """True when the proxy answered the chunk itself."""
        line = chunk.split(b"\r\n", 1)[0]
        if line.endswith(b"HTTP/1.1"):
            self.requests.append(line.decode("latin-1"))
        with self._lock:
            if self._answer is not None and self._answer[0] in chunk:
                raw, self._answer = self._answer[1], None
                self.answered += 1
                client.sendall(raw)
                return True
            if self._lose is not None and self._lose in chunk:
                self._lose = None
                state["losing"] = True
        return False

    def _downstream(
        self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]
    ) -> None:
        try:
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                if state["losing"]:
                    self.lost += 1
                    break
                if not state["frozen"]:
                    client.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def unavailable_response(
    retry_after: str = "0.2",
    status: str = "503 Service Unavailable",
    code: str = "broker_unavailable",
) -> bytes:
    body = f'{{"error":{{"code":"{code}","message":"try again later"}}}}'.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode()
        + b"Connection: close\r\n"
        + f"Retry-After: {retry_after}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
