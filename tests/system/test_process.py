"""The real process: `progress-relay serve`, an independent SSE client, and signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.support.process import ENTRY_POINT, Relay, free_port, start_relay


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = start_relay(env={"PROGRESS_RELAY_STREAM_HEARTBEAT": "0.5"})
    yield relay
    relay.close()


def test_entry_point_is_installed() -> None:
    assert ENTRY_POINT.exists() or shutil.which("progress-relay")


def test_stream_with_an_independent_client(relay: Relay) -> None:
    with httpx.Client(base_url=relay.base_url, timeout=10) as http:
        first = http.post(
            "/v1/jobs/report-7/events", json={"event": "progress", "data": {"percent": 5}}
        )
        assert first.status_code == 200
        with connect_sse(http, "GET", "/v1/jobs/report-7/stream") as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert source.response.headers["cache-control"] == "no-cache, no-transform"
            assert source.response.headers["x-accel-buffering"] == "no"
            events = source.iter_sse()
            retry = next(events)
            assert (retry.retry, retry.data) == (3000, "")
            replayed = next(events)
            assert (replayed.event, replayed.id, replayed.json()) == (
                "progress",
                first.json()["ids"][0],
                {"percent": 5},
            )
            http.post("/v1/jobs/report-7/events", json={"event": "log", "data": {"message": "é ✓"}})
            http.post("/v1/jobs/report-7/events", json={"event": "complete", "data": {"result": 1}})
            rest = [(sse.event, sse.json()) for sse in events]
        assert rest == [("log", {"message": "é ✓"}), ("complete", {"result": 1})]
        # Reconnecting past the terminal event gets 204, so a browser stops reconnecting.
        again = http.get("/v1/jobs/report-7/stream", headers={"Last-Event-ID": replayed.id})
        assert again.status_code == 200  # still has the log and complete to give
        done = http.get(
            "/v1/jobs/report-7/stream",
            headers={"Last-Event-ID": http.get("/v1/jobs/report-7").json()["last_event_id"]},
        )
        assert done.status_code == 204


def test_python_dash_m_service_serves_the_same(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "progress_relay", "serve", "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "python -m service did not start"
                time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_open_streams_and_exits_zero(relay: Relay, sig: int) -> None:
    """Open streams (one of them idle, one mid-job) end within 2 s of the signal; exit 0."""
    ended: list[str] = []
    ready = threading.Barrier(4)

    def watch(path: str) -> None:
        with (
            httpx.Client(base_url=relay.base_url, timeout=30) as http,
            connect_sse(http, "GET", path) as source,
        ):
            ready.wait(10)
            for _ in source.iter_sse():
                pass
        ended.append(path)

    httpx.post(
        f"{relay.base_url}/v1/jobs/busy/events", json={"event": "progress", "data": {"percent": 1}}
    )
    paths = [
        "/v1/jobs/busy/stream",
        "/v1/jobs/never-published/stream",
        "/v1/stream?job=busy&job=other",
    ]
    threads = [threading.Thread(target=watch, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    ready.wait(10)
    time.sleep(0.2)  # let the relay register all three subscribers
    assert httpx.get(f"{relay.base_url}/healthz").json()["streams"] == 3
    code, elapsed, log = relay.stop(sig)
    for thread in threads:
        thread.join(5)
    assert code == 0, log
    assert elapsed < 2.0, f"took {elapsed:.2f} s to exit"
    assert sorted(ended) == sorted(paths)
    assert "Traceback" not in log, log


def test_client_disconnects_leave_no_traceback(relay: Relay) -> None:
    for _ in range(5):
        with (
            httpx.Client(base_url=relay.base_url, timeout=5) as http,
            connect_sse(http, "GET", "/v1/jobs/gone/stream") as source,
        ):
            source.response.close()
    with httpx.Client(base_url=relay.base_url, timeout=5) as http:
        http.post("/v1/jobs/gone/events", json={"event": "progress", "data": {"percent": 50}})
        assert http.get("/healthz").json()["streams"] == 0
    code, _, log = relay.stop()
    assert code == 0
    assert "Traceback" not in log and "Error" not in log, log


def test_bad_configuration_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[stream]\nheartbeat = "often"\n')
    result = subprocess.run(
        [str(ENTRY_POINT), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "stream.heartbeat" in result.stderr
    result = subprocess.run(
        [str(ENTRY_POINT), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PROGRESS_RELAY_JOBS_RING_EVENTS": "-3"},
    )
    assert result.returncode == 2
    assert "jobs.ring_events" in result.stderr


def test_json_log_lines() -> None:
    """`log.format = "json"`: every line the relay writes is one JSON object, access lines too,
    with tokens in URLs redacted."""
    relay = start_relay(env={"PROGRESS_RELAY_LOG_FORMAT": "json"})
    try:
        httpx.get(f"{relay.base_url}/v1/jobs/none?token=secret-token-value")
    finally:
        code, _, log = relay.stop()
    assert code == 0
    lines = [json.loads(line) for line in log.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [line for line in lines if line["logger"] == "aiohttp.access"]
    assert any("GET /v1/jobs/none?token=*** " in line["message"] for line in access), access
    assert "secret-token-value" not in log
    [line] = [line for line in access if line["path"] == "/v1/jobs/none?token=***"]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/v1/jobs/{job_id}", 404)
    assert line["client"] == "127.0.0.1" and line["request_id"] and line["duration_ms"] >= 0
