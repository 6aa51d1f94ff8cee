"""``python -m bench.connections``: what hostile connections cost a real relay, and for how long.

Runs `progress-relay serve` with its default settings (or whatever the environment sets) and,
one attack at a time on loopback:

- idle: COUNT keep-alive connections that sent one request and then nothing;
- slowloris: COUNT connections that send a header byte a second and never finish the head;
- stopped: STREAMS streams of a client process that is then SIGSTOPped, after a few events;
- exhaustion: a relay under ``prlimit --nofile=N:N`` offered N + 100 idle connections, which are
  then closed.

For each it prints the relay's open descriptors before and during the attack, the seconds until
the relay let the connections go (or "held" past --patience), and for the exhaustion the log
lines and bytes it wrote and the seconds until /healthz answered once the descriptors were
free. docs/reliability.md has the figures of a run. Point PYTHONPATH at another source tree to
measure that one with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RELAY = Path(sys.executable).with_name("progress-relay")

# A client process (the same as tests/attack/test_stuck_peers.py's): N streams with small
# receive buffers, then it reads nothing.
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


@dataclass
class Relay:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def relay(prefix: list[str] | None = None) -> Iterator[Relay]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-connections-") as directory:
        log = Path(directory) / "relay.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*(prefix or []), str(RELAY), "serve", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the relay did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            yield Relay(process, port, log)
        finally:
            process.kill()
            process.wait(10)


async def closed_by_relay(reader: asyncio.StreamReader) -> float:
    """Loop time when the relay closed the connection (reading and dropping what it sends)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    return asyncio.get_running_loop().time()


async def released(
    closings: list[asyncio.Task[float]], started: float, patience: float
) -> tuple[int, float | None]:
    """How many connections the relay let go within ``patience``, and when the last went."""
    done, _ = await asyncio.wait(closings, timeout=patience)
    if len(done) < len(closings):
        return len(done), None
    return len(done), max(task.result() for task in done) - started


@contextlib.asynccontextmanager
async def connections(port: int, count: int) -> AsyncIterator[list[Any]]:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            opened.append(await asyncio.open_connection("127.0.0.1", port))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def idle(count: int, patience: float) -> dict[str, Any]:
    with relay() as server:
        before = server.fds()
        async with connections(server.port, count) as opened:
            for _, writer in opened:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            for reader, _ in opened:
                await reader.readuntil(b"}")
            held = server.fds()
            started = asyncio.get_running_loop().time()
            tasks = [asyncio.create_task(closed_by_relay(reader)) for reader, _ in opened]
            gone, seconds = await released(tasks, started, patience)
            after = server.fds()
            for task in tasks:
                task.cancel()
    return {"fds_before": before, "fds_held": held, "released": gone, "seconds": seconds,
            "fds_after": after}  # fmt: skip


async def slowloris(count: int, patience: float) -> dict[str, Any]:
    with relay() as server:
        before = server.fds()
        async with connections(server.port, count) as opened:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for n, (_, writer) in enumerate(opened):
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow-%d: " % n)
            tasks = [asyncio.create_task(closed_by_relay(reader)) for reader, _ in opened]

            async def dribble() -> None:
                while True:
                    await asyncio.sleep(1)
                    for _, writer in opened:
                        if not writer.is_closing():
                            writer.write(b"a")

            dribbling = asyncio.create_task(dribble())
            await asyncio.sleep(1.5)
            held = server.fds()
            gone, seconds = await released(tasks, started, patience)
            await asyncio.sleep(2)  # each answered connection reads on for a second (its 408)
            after = server.fds()
            dribbling.cancel()
            for task in tasks:
                task.cancel()
    return {"fds_before": before, "fds_held": held, "released": gone, "seconds": seconds,
            "fds_after": after}  # fmt: skip


def stopped(streams: int, patience: float) -> dict[str, Any]:
    with relay() as server:
        before = server.fds()
        httpx.post(f"{server.base}/v1/jobs", json={"id": "stopped"})
        reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER,
                str(server.port),
                "/v1/jobs/stopped/stream",
                str(streams),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
            os.kill(reader.pid, signal.SIGSTOP)
            events = [
                {"event": "log", "data": {"message": f"{i} " + "x" * 4000}} for i in range(16)
            ]
            posted = httpx.post(
                f"{server.base}/v1/jobs/stopped/events", json={"events": events}, timeout=30
            )
            assert posted.status_code == 200, posted.text
            held = server.fds()
            started = time.monotonic()
            seconds: float | None = None
            while time.monotonic() - started < patience:
                if httpx.get(f"{server.base}/healthz").json()["streams"] == 0:
                    seconds = time.monotonic() - started
                    break
                time.sleep(0.1)
            after = server.fds()
        finally:
            os.kill(reader.pid, signal.SIGCONT)
            reader.kill()
            reader.communicate(timeout=10)
    return {"fds_before": before, "fds_held": held, "seconds": seconds, "fds_after": after}


def exhaustion(limit: int) -> dict[str, Any]:
    with relay(["prlimit", f"--nofile={limit}:{limit}"]) as server:
        size_before = server.log.stat().st_size
        held = []
        try:
            for _ in range(limit + 100):
                held.append(socket.create_connection(("127.0.0.1", server.port)))
            time.sleep(5)  # out of descriptors for 5 s
            fds = server.fds()
            try:
                httpx.get(f"{server.base}/healthz", timeout=1)
                answered_while_out = True
            except httpx.TransportError:
                answered_while_out = False
        finally:
            for sock in held:
                sock.close()
        freed = time.monotonic()
        seconds: float | None = None
        while time.monotonic() - freed < 30:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.base}/healthz", timeout=0.5).status_code == 200:
                    seconds = time.monotonic() - freed
                    break
        text = server.log.read_text(errors="replace")
        logged = text.encode()[size_before:]
    return {
        "limit": limit,
        "fds_at_limit": fds,
        "healthz_while_out": answered_while_out,
        "log_bytes": len(logged),
        "log_lines": logged.count(b"\n"),
        "tracebacks": logged.count(b"Traceback"),
        "healthz_after_free_s": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connections", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="idle and slowloris connections")
    parser.add_argument("--streams", type=int, default=200, help="streams of the stopped client")
    parser.add_argument("--fd-limit", type=int, default=1024)
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait at most")
    parser.add_argument("--only", help="comma-separated: idle,slowloris,stopped,exhaustion")
    args = parser.parse_args(argv)
    chosen = set((args.only or "idle,slowloris,stopped,exhaustion").split(","))
    results: dict[str, Any] = {}
    if "idle" in chosen:
        results["idle"] = asyncio.run(idle(args.count, args.patience))
        print("idle", results["idle"], flush=True)
    if "slowloris" in chosen:
        results["slowloris"] = asyncio.run(slowloris(args.count, args.patience))
        print("slowloris", results["slowloris"], flush=True)
    if "stopped" in chosen:
        results["stopped"] = stopped(args.streams, args.patience)
        print("stopped", results["stopped"], flush=True)
    if "exhaustion" in chosen:
        results["exhaustion"] = exhaustion(args.fd_limit)
        print("exhaustion", results["exhaustion"], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
