"""config/nginx.conf itself, run by a real nginx in front of two real relays on one real Redis.

Publishes go through nginx as well, so its round-robin sends them to both instances while the
stream is served by one: every event reaches the stream over Redis from either instance.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.support.process import free_port
from tests.support.redis_server import RedisServer

NGINX = "/usr/sbin/nginx"
NGINX_CONF = Path(__file__).resolve().parents[2] / "config" / "nginx.conf"
# How long one event may take from its publish to the stream, through nginx. What holds a frame
# back in nginx (a buffer, gzip) holds it until more data comes, so any bound well above the
# latency will do.
EVENT_TIMEOUT = 5.0
START_TIMEOUT = 15.0
# limits.max_streams_per_client of the relays behind nginx.
PER_CLIENT = 2


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL to its whole process group (nginx's workers too) if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so the group id is still ours: started with start_new_session.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args!r} exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready within {START_TIMEOUT} s:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def relay_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Two `progress-relay serve` processes on one redis-server."""
    directory = tmp_path_factory.mktemp("relays")
    redis = RedisServer(directory)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis.start()
        env = {
            **os.environ,
            "PROGRESS_RELAY_BROKER_URL": redis.url,
            # As config/nginx.conf's comment says to run them.
            "PROGRESS_RELAY_SERVER_TRUSTED_PROXIES": "127.0.0.1",
            "PROGRESS_RELAY_LIMITS_MAX_STREAMS_PER_CLIENT": str(PER_CLIENT),
        }
        ports = [free_port(), free_port()]
        for port in ports:
            log = directory / f"relay-{port}.log"
            command = [sys.executable, "-m", "progress_relay", "serve"]
            command += ["--host", "127.0.0.1", "--port", str(port)]
            processes.append(spawn(command, log, env))
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", processes[-1], log)
        yield ports
    finally:
        for process in processes:
            stop(process)
        redis.stop()


def render_config(listen_port: int, relay_ports: list[int], *, strict: bool) -> str:
    """config/nginx.conf with the lines it marks CHANGE: set for this test."""
    text = NGINX_CONF.read_text()
    first, second = relay_ports
    substitutions = [
        # As root, the workers would switch to www-data, which cannot enter pytest's private
        # temporary directory (where the temp files are); as anyone else the line is ignored.
        (r"^user www-data;", "user root;" if os.geteuid() == 0 else "# user: the test's user"),
        (r"^(\s*)listen 8000;", rf"\g<1>listen 127.0.0.1:{listen_port};"),
        (r"^(\s*)server 127\.0\.0\.1:8080;", rf"\g<1>server 127.0.0.1:{first};"),
        (r"^(\s*)server 127\.0\.0\.1:8081;", rf"\g<1>server 127.0.0.1:{second};"),
    ]
    if strict:
        # The relay's own `X-Accel-Buffering: no` turns nginx's buffering off by itself: with it
        # ignored, what the stream test sees depends on the file's directives alone.
        substitutions.append(
            (
                r"^(\s*)location ~ .*stream\$ \{$",
                r"\g<0>\n\g<1>    proxy_ignore_headers X-Accel-Buffering;",
            )
        )
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, (
            f"{NGINX_CONF} has {count} lines matching {pattern!r}, not one: "
            "update the substitutions in tests/system/test_nginx.py"
        )
    return text


@dataclass
class Nginx:
    base_url: str
    prefix: Path

    def upstreams(self, request_line: str, expected: int) -> list[int]:
        """The relay ports that served the requests logged with ``request_line``, waiting (up
        to 5 s) until ``expected`` of them are logged: nginx logs a request after answering."""
        pattern = re.compile(rf'"{re.escape(request_line)} HTTP/1\.1" \d+ .*upstream=(\S+)')
        deadline = time.monotonic() + 5
        while True:
            log = (self.prefix / "access.log").read_text()
            addresses = [match[1] for match in pattern.finditer(log)]
            if len(addresses) >= expected or time.monotonic() > deadline:
                return [int(address.rsplit(":", 1)[1]) for address in addresses]
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["as-shipped", "relay-header-ignored"])
def nginx(
    request: pytest.FixtureRequest,
    relay_ports: list[int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Nginx]:
    """nginx with config/nginx.conf in front of both relays, on a free port of 127.0.0.1."""
    if not Path(NGINX).exists():
        pytest.fail(f"{NGINX} is missing: run `make test`, which installs Debian's nginx-light")
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render_config(port, relay_ports, strict=request.param != "as-shipped"))
    log = prefix / "nginx.out"
    # -p: the file's relative paths (pid, logs, temp directories) land in the temporary
    # directory; -e: where nginx logs before it has read the file.
    command = [NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    process = spawn(command, log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base_url}/healthz", process, log)
        yield Nginx(base_url, prefix)
    finally:
        stop(process)


def client(base_url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """Every read waits at most EVENT_TIMEOUT; no proxy from the environment."""
    return httpx.Client(base_url=base_url, headers=headers, timeout=EVENT_TIMEOUT, trust_env=False)


@pytest.mark.parametrize("multi", [False, True], ids=["job-stream", "multi-job-stream"])
def test_each_event_arrives_before_the_next_is_published(
    nginx: Nginx, relay_ports: list[int], multi: bool
) -> None:
    job = f"nginx-{uuid.uuid4().hex[:12]}"
    path = f"/v1/stream?job={job}" if multi else f"/v1/jobs/{job}/stream"
    count = 10
    waiting_for = "the stream's response headers"
    try:
        with (
            client(nginx.base_url) as viewer,
            client(nginx.base_url) as publisher,
            connect_sse(viewer, "GET", path) as source,
        ):
            assert source.response.status_code == 200
            events = source.iter_sse()
            waiting_for = "the retry frame"
            assert next(events).retry == 3000
            for index in range(count):
                last = index == count - 1
                name, data = (
                    ("complete", {"result": index}) if last else ("progress", {"percent": index})
                )
                waiting_for = f"the answer to publish {index}"
                published = publisher.post(
                    f"/v1/jobs/{job}/events", json={"event": name, "data": data}
                )
                assert published.status_code == 200, published.text
                [event_id] = published.json()["ids"]
                # A progress carries the relay's ETA: the snapshot's after that event (read
                # past nginx, so as not to change its round-robin).
                relay = f"http://127.0.0.1:{relay_ports[0]}"
                eta = httpx.get(f"{relay}/v1/jobs/{job}", timeout=10).json()["eta_seconds"]
                if name == "progress" and eta is not None:
                    data = {**data, "eta_seconds": eta}
                waiting_for = f"event {index}"
                sse = next(events)
                expected = {"job": job, "data": data} if multi else data
                assert (sse.event, sse.id, sse.json()) == (name, event_id, expected)
            # After the terminal event the relay ends the stream, and nginx ends it too.
            waiting_for = "the end of the stream"
            assert list(events) == []
    except httpx.ReadTimeout:
        pytest.fail(
            f"{waiting_for} did not come through nginx within {EVENT_TIMEOUT} s: "
            "nginx holds the stream back (buffering? compression?)"
        )
    served = nginx.upstreams(f"POST /v1/jobs/{job}/events", count)
    assert len(served) == count
    assert set(served) == set(relay_ports), f"round-robin should use both instances: {served}"


@pytest.mark.parametrize("path", ["/v1/jobs/{job}/stream", "/v1/stream?job={job}"])
def test_streams_are_never_compressed(nginx: Nginx, path: str) -> None:
    job = f"nginx-{uuid.uuid4().hex[:12]}"
    with client(nginx.base_url, headers={"Accept-Encoding": "gzip"}) as http:
        message = "Searching documents " * 10
        published = http.post(
            f"/v1/jobs/{job}/events",
            json={"event": "progress", "data": {"percent": 5, "message": message}},
        )
        assert published.status_code == 200, published.text
        # The control: the file turns gzip on, and JSON answers through nginx are compressed.
        history = http.get(f"/v1/jobs/{job}/events")
        assert history.status_code == 200
        assert history.headers.get("content-encoding") == "gzip"
        with http.stream("GET", path.format(job=job)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in response.headers, response.headers
            received = b""
            for chunk in response.iter_raw():
                received += chunk
                if b"\n\n" in received.removeprefix(b"retry: 3000\n\n"):
                    break
        # The bytes on the wire are the frames themselves.
        assert received.startswith(b"retry: 3000\n\nid: ")
        assert b"\nevent: progress\ndata: " in received


def test_streams_count_per_client_by_the_address_nginx_appended(nginx: Nginx) -> None:
    """A client on 127.0.0.2 (nginx and the relays talk over 127.0.0.1) claims another address
    in X-Forwarded-For: nginx appends the one it saw, and that is the one the relays count."""
    job = f"nginx-{uuid.uuid4().hex[:12]}"
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    spoofed = {"X-Forwarded-For": "10.9.9.9"}
    with httpx.Client(
        base_url=nginx.base_url, transport=transport, timeout=EVENT_TIMEOUT, trust_env=False
    ) as http:
        opened = []
        try:
            # At most PER_CLIENT on each of the two instances, wherever nginx sends them.
            for _ in range(2 * PER_CLIENT + 1):
                request = http.build_request(
                    "GET", f"/v1/jobs/{job}/stream?replay=none", headers=spoofed
                )
                response = http.send(request, stream=True)
                opened.append(response)
                if response.status_code != 200:
                    break
            refused = opened[-1]
            assert refused.status_code == 503
            message = json.loads(refused.read())["error"]["message"]
            assert "(127.0.0.2)" in message and "10.9.9.9" not in message
            # Another client (its own address) is not held back by that one.
            with (
                client(nginx.base_url) as other,
                other.stream("GET", f"/v1/jobs/{job}/stream?replay=none") as response,
            ):
                assert response.status_code == 200
        finally:
            for response in opened:
                response.close()
