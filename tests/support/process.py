"""Real relay processes: ``progress-relay serve`` on a free port, its log read all along."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


ENTRY_POINT = Path(sys.executable).with_name("progress-relay")


class Relay:
    """A relay process. Its stderr is read all along (a full pipe would block the relay on its
    next log line) and kept for the test; so is its stdout, when it was captured."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self._lines: list[str] = []
        self._out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out_reader: threading.Thread | None = None
        if process.stdout is not None:
            self._out_reader = threading.Thread(target=self._read_out, daemon=True)
            self._out_reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self._lines.append(line)

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._out.append(line)

    @property
    def output(self) -> str:
        """What it wrote to stdout (start_relay(capture_stdout=True)), all of it once it ended."""
        if self._out_reader is not None and self.process.poll() is not None:
            self._out_reader.join(timeout=5)
        return "".join(self._out)

    @property
    def log(self) -> str:
        return "".join(self._lines)

    def wait(self, timeout: float = 5.0) -> str:
        """Wait for the process to end; everything it logged."""
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return self.log

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float, str]:
        """Send ``sig``; the exit code, the seconds it took, and everything it logged."""
        started = time.monotonic()
        self.process.send_signal(sig)
        log = self.wait(timeout)
        return self.process.returncode, time.monotonic() - started, log

    def close(self) -> None:
        """Kill the process if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


def start_relay(
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    capture_stdout: bool = False,
) -> Relay:
    port = port or free_port()
    command = [str(ENTRY_POINT), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    return run_relay(
        command,
        {**os.environ, **(env or {})},
        f"http://127.0.0.1:{port}",
        capture_stdout=capture_stdout,
    )


def run_relay(
    command: list[str], env: dict[str, str], base_url: str, *, capture_stdout: bool = False
) -> Relay:
    """Run ``command`` with exactly ``env``; the Relay once ``base_url``/readyz answers 200."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"relay exited at start: {process.communicate()[1]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return Relay(process, base_url)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("relay did not become ready within 15 s")
