"""The servers under load: progress-relay, Nchan, the naive relay, and redis-server.

Each runs in a process group of its own (``start_new_session``), pinned with ``taskset`` to the
server CPU when the machine has two, and is killed with its whole group when the measurement
ends, whatever way it ends. What a scenario needs from a server is the ``Server`` interface:
where to subscribe, how to publish, and which processes to measure.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
NGINX = "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
RELAY = Path(sys.executable).with_name("progress-relay")
START_TIMEOUT = 20.0
EVENT_NAME = b"tick"

# The relay's limits are there to protect a production instance; the bench opens 10,000
# streams from one address and publishes as fast as it can, so they are lifted (publish_rate
# must stay > 0: a rate no one reaches disables it in practice).
RELAY_ENV = {
    "PROGRESS_RELAY_LIMITS_MAX_STREAMS": "1000000",
    "PROGRESS_RELAY_LIMITS_MAX_STREAMS_PER_JOB": "1000000",
    "PROGRESS_RELAY_LIMITS_MAX_STREAMS_PER_CLIENT": "1000000",
    "PROGRESS_RELAY_LIMITS_PUBLISH_RATE": "1000000000",
    "PROGRESS_RELAY_LIMITS_PUBLISH_BURST": "1000000000",
    "PROGRESS_RELAY_JOBS_MAX_JOBS": "1000000",
    # One access line per request would measure the logger, and Nchan and the naive relay log
    # nothing either.
    "PROGRESS_RELAY_LOG_LEVEL": "WARNING",
}

NCHAN_CONF = """\
load_module {module};
worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections {nofile}; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    nchan_shared_memory_size 512M;
    server {{
        listen {host}:{port} backlog=4096;
        location = /healthz {{ return 200 "ok"; }}
        location ~ ^/pub/(.+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
            nchan_message_buffer_length 100;
            nchan_message_timeout 1h;
        }}
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_eventsource_ping_interval 15;
            nchan_eventsource_ping_comment "ping";
            nchan_eventsource_ping_event "";
            nchan_eventsource_ping_data "";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# Read once, at import: the bench then pins itself to the load CPU, and what the servers are
# pinned to must not depend on that.
_CPUS = sorted(os.sched_getaffinity(0))


def cpus() -> tuple[str | None, int | None]:
    """(server CPU, load CPU): the first two CPUs this may use, when there are two and taskset;
    else no pinning."""
    if len(_CPUS) >= 2 and shutil.which("taskset"):
        return str(_CPUS[0]), _CPUS[1]
    return None, None


def _pinned(command: list[str]) -> list[str]:
    server_cpu, _ = cpus()
    return ["taskset", "-c", server_cpu, *command] if server_cpu is not None else command


_running: list[subprocess.Popen[bytes]] = []
# Server logs that are not empty are kept here (gitignored) for the post-mortem of a run.
SCRATCH = Path(__file__).resolve().parent / "results" / "scratch"


def keep_log(log: Path) -> None:
    if log.exists() and log.stat().st_size > 0:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%H%M%S")
        shutil.copy(log, SCRATCH / f"{stamp}-{log.parent.name}-{log.name}")


def _spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            _pinned(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    _running.append(process)
    return process


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole group (nginx's worker too) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    with contextlib.suppress(ValueError):
        _running.remove(process)


def kill_all() -> None:
    """Every process the bench started and has not killed yet (on failure or Ctrl-C)."""
    for process in list(_running):
        kill(process)


def _session_pids(leader: int) -> list[int]:
    """The processes of the session ``leader`` started (nginx: master and worker)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[3]) == leader:  # field 6 of the line: the session id
            pids.append(int(entry))
    return pids


def _http_ok(port: int, path: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
            return sock.recv(16)[8:13] == b" 200 "
    except OSError:
        return False


def _wait_ready(process: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _http_ok(port, path):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited at start:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{process.args!r} not ready in {START_TIMEOUT} s:\n{log.read_text()}"
            )
        time.sleep(0.05)


@dataclass
class Server:
    """One server under test (a relay may be several processes: ``ports``)."""

    name: str
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    stream_prefix: str
    publish_prefix: str
    resume: bool
    batch: bool
    wrap: bool  # the publish body is {"event", "data"} (relays), not the bare payload (Nchan)
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The session leader's pid is its session id; children (nginx's worker) are in it.
        self.pids = [pid for p in self.processes for pid in _session_pids(p.pid)]
        if not self.pids:
            self.pids = [p.pid for p in self.processes]
        # taskset execs the server in place, so the pid is the server's.

    def stream_path(self, job: str) -> str:
        return f"{self.stream_prefix}{job}{'/stream' if self.wrap else ''}"

    def publish_request(self, job: str, port: int, payload: bytes) -> bytes:
        if self.wrap:
            body = b'{"event":"%s","data":%s}' % (EVENT_NAME, payload)
            path = f"{self.publish_prefix}{job}/events"
        else:
            body = payload
            path = f"{self.publish_prefix}{job}"
        return _post(path, port, body)

    def batch_request(self, job: str, port: int, payloads: Sequence[bytes]) -> bytes:
        items = b",".join(b'{"event":"%s","data":%s}' % (EVENT_NAME, p) for p in payloads)
        return _post(f"{self.publish_prefix}{job}/events", port, b'{"events":[%s]}' % items)


def _post(path: str, port: int, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), HOST.encode(), port, len(body), body)
    )


@contextlib.contextmanager
def progress_relay(instances: int = 1, redis_url: str | None = None) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as directory:
        processes, ports = [], []
        try:
            for index in range(instances):
                port = free_port()
                command = [str(RELAY), "serve", "--host", HOST, "--port", str(port)]
                if redis_url is not None:
                    command += ["--broker", redis_url]
                log = Path(directory) / f"relay-{index}.log"
                process = _spawn(command, log, RELAY_ENV)
                processes.append(process)
                ports.append(port)
                _wait_ready(process, port, "/readyz", log)
            yield Server(
                name="progress-relay",
                ports=ports,
                processes=processes,
                stream_prefix="/v1/jobs/",
                publish_prefix="/v1/jobs/",
                resume=True,
                batch=True,
                wrap=True,
            )
        finally:
            for process in processes:
                kill(process)
            for log in Path(directory).glob("*.log"):
                keep_log(log)


@contextlib.contextmanager
def naive_relay() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="bench-naive-") as directory:
        port = free_port()
        log = Path(directory) / "naive.log"
        command = [sys.executable, "-m", "bench.naive_relay", "--port", str(port)]
        # The bench package is not installed: it is found from the repository root.
        process = _spawn(command, log, {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        try:
            _wait_ready(process, port, "/healthz", log)
            yield Server(
                name="naive",
                ports=[port],
                processes=[process],
                stream_prefix="/v1/jobs/",
                publish_prefix="/v1/jobs/",
                resume=False,
                batch=False,
                wrap=True,
            )
        finally:
            kill(process)
            keep_log(log)


def nchan_available() -> bool:
    return Path(NGINX).exists() and Path(NCHAN_MODULE).exists()


@contextlib.contextmanager
def nchan() -> Iterator[Server]:
    if not nchan_available():
        raise RuntimeError(
            "Nchan is missing: `make bench` installs nginx-light and libnginx-mod-nchan"
        )
    with tempfile.TemporaryDirectory(prefix="bench-nchan-") as prefix:
        for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(f"{prefix}/{temp}", mode=0o777)
        os.chmod(prefix, 0o755)
        port = free_port()
        conf = Path(prefix) / "nginx.conf"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        conf.write_text(
            NCHAN_CONF.format(
                module=NCHAN_MODULE, prefix=prefix, host=HOST, port=port, nofile=nofile
            )
        )
        log = Path(prefix) / "stdout.log"
        process = _spawn([NGINX, "-p", prefix, "-c", str(conf), "-g", "daemon off;"], log)
        try:
            _wait_ready(process, port, "/healthz", log)
            # The worker forks after the master is ready; give it a moment to be listed.
            time.sleep(0.1)
            yield Server(
                name="nchan",
                ports=[port],
                processes=[process],
                stream_prefix="/sub/",
                publish_prefix="/pub/",
                resume=True,
                batch=False,
                wrap=False,
            )
        finally:
            kill(process)
            keep_log(Path(prefix) / "error.log")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        port = free_port()
        command = [REDIS_SERVER, "--bind", HOST, "--port", str(port), "--dir", directory,
                   "--save", "", "--appendonly", "no", "--maxclients", "60000"]  # fmt: skip
        log = Path(directory) / "redis.log"
        process = _spawn(command, log)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _redis_ping(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{log.read_text()}")
                time.sleep(0.02)
            yield f"redis://{HOST}:{port}/0"
        finally:
            kill(process)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
