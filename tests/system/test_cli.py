"""The client commands of the CLI, run as processes against real relays (both brokers)."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import httpx
import jwt
import pytest
from packaging.requirements import Requirement

import progress_relay
from progress_relay.cli.main import build_parser
from progress_relay.cli.watch import WatchView
from progress_relay.client import Event, Relay
from tests.support.client_support import (
    RunningRelay,
    eventually,
    free_port,
    history,
    job_id,
    own_relay,
    shared_relay,
    snapshot,
)
from tests.support.process import start_relay

__all__ = ["own_relay", "shared_relay"]  # fixtures

SECRET = "k" * 40


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESS_RELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "progress_relay", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("progress-relay: ")
    return lines[0]


def test_publish_builds_the_event_from_options(shared_relay: RunningRelay) -> None:
    job = job_id()
    url = shared_relay.url
    first = cli("publish", job, "progress", "--percent", "40", "--stage", "searching",
                "--message", "Searching documents", "--url", url)  # fmt: skip
    assert first.returncode == 0, first.stderr
    ids = json.loads(first.stdout)["ids"]
    second = cli("publish", job, "log", "--data", '{"message": "found 12", "level": "success"}',
                 env={"PROGRESS_RELAY_URL": url})  # fmt: skip
    assert second.returncode == 0, second.stderr
    events = history(url, job)
    assert events[0] == {
        "id": ids[0],
        "event": "progress",
        "data": {"percent": 40, "stage": "searching", "message": "Searching documents"},
    }
    assert events[1]["data"] == {"message": "found 12", "level": "success"}


def test_publish_errors_are_one_line_with_their_status(shared_relay: RunningRelay) -> None:
    job = job_id()
    url = shared_relay.url
    bad = cli("publish", job, "log", "--data", "{nope", "--url", url)
    assert bad.returncode == 2 and "--data is not valid JSON" in one_line_error(bad)
    assert cli("publish", job, "complete", "--url", url).returncode == 0
    finished = cli("publish", job, "log", "--message", "late", "--url", url)
    assert finished.returncode == 5 and "job_finished" in one_line_error(finished)
    invalid = cli("publish", job_id(), "progress", "--percent", "140", "--url", url)
    assert invalid.returncode == 5 and "invalid_event" in one_line_error(invalid)
    down_url = f"http://127.0.0.1:{free_port()}"
    down = cli("publish", job, "log", "--message", "x", "--url", down_url, "--retry-budget", "0.3")
    assert down.returncode == 3
    line = one_line_error(down)
    assert line.startswith("progress-relay: the relay is unavailable: publish log to job")
    assert f"(relay {down_url}): gave up after" in line and "Connection refused" in line


@pytest.mark.parametrize(
    ("end", "data", "status", "last_line"),
    [
        ("complete", {"message": "Report ready", "result": {"pages": 3}}, 0,
         'completed: Report ready  result: {"pages": 3}'),
        ("failed", {"message": "Model timed out", "code": "timeout"}, 1,
         "failed: Model timed out (timeout)"),
        ("cancelled", {"message": "Stopped by user"}, 2, "cancelled: Stopped by user"),
    ],
)  # fmt: skip
def test_watch_exits_with_the_status_of_the_end(
    shared_relay: RunningRelay, end: str, data: dict[str, object], status: int, last_line: str
) -> None:
    job = job_id()
    with Relay(shared_relay.url) as relay:
        relay.progress(job, 40, stage="searching", message="Searching")
        relay.log(job, "found 12 documents", level="success")
        relay.content(job, "The answer\nis 42")
        relay.publish(job, end, data)
    result = cli("watch", job, "--url", shared_relay.url)
    assert result.returncode == status, result.stderr
    lines = result.stdout.splitlines()
    assert "\x1b[" not in result.stdout  # no terminal: plain lines, no redrawing
    assert lines[0] == "searching  [##########..............]   40%  Searching"
    assert "success  found 12 documents" in lines
    assert "The answer" in lines and "is 42" in lines
    assert lines[-1] == last_line


def test_watch_draws_a_reset_when_history_is_gone(own_relay: Callable[..., RunningRelay]) -> None:
    running = own_relay(PROGRESS_RELAY_JOBS_RING_EVENTS="3")
    job = job_id()
    with Relay(running.url) as relay:
        relay.progress(job, 30, stage="reading")
        for i in range(5):
            relay.log(job, f"log {i}")
        for text in ("Once upon\n", "a ", "t\u00efme"):
            relay.content(job, text)
        relay.fail(job, "out of memory", code="OOM")
    result = cli("watch", job, "--url", running.url)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # The stream starts with `reset` (the snapshot): its log tail, its text, its state, its end.
    assert lines[:5] == [f"   info  log {i}" for i in range(5)]
    assert lines[5:7] == ["Once upon", "a t\u00efme"]
    assert lines[-1] == "failed: out of memory (OOM)"


def test_watch_continues_the_text_after_a_reset_mid_answer(
    own_relay: Callable[..., RunningRelay],
) -> None:
    """A `reset` in the middle of a watch (the ring outrun while its stream was away) prints
    the log lines and the text it adds, not what was shown already."""
    running = own_relay(PROGRESS_RELAY_JOBS_RING_EVENTS="3")
    job = job_id()
    out = io.StringIO()
    view = WatchView(out, tty=False, job=job)
    with Relay(running.url) as relay:
        for text in ("The ans", "wer\nis"):  # seen live
            published = relay.content(job, text)
            view.apply(Event(published.ids[0], "content", {"text": text}, job))
        assert out.getvalue() == "The answer\n"
        for text in (" 42\n", "Done"):  # missed
            relay.content(job, text)
        relay.log(job, "checked", "success")
        relay.complete(job)
        # the reconnect: its last id is out of the ring
        [reset] = relay.subscribe(job, last_event_id=published.ids[0])
    assert reset.event == "reset"
    view.apply(reset)
    view.close()
    assert out.getvalue().splitlines() == [
        "The answer",
        "success  checked",
        "is 42",
        "Done",
        "completed  [########################]  100%",
        "completed",
    ]


def test_watch_unknown_job_and_relay_down(own_relay: Callable[..., RunningRelay]) -> None:
    # The stream of a job without events waits jobs.pending_ttl, then says job_not_found.
    running = own_relay(PROGRESS_RELAY_JOBS_PENDING_TTL="0.5", PROGRESS_RELAY_REAPER_INTERVAL="0.1")
    missing = cli("watch", job_id(), "--url", running.url)
    assert missing.returncode == 4 and "job not found" in one_line_error(missing)
    assert "failed" not in missing.stdout
    down = cli("watch", "x", "--url", f"http://127.0.0.1:{free_port()}", "--retry-budget", "0.3")
    assert down.returncode == 3 and "is unavailable" in one_line_error(down)


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_watch_draws_a_live_bar_in_a_terminal(shared_relay: RunningRelay) -> None:
    job = job_id()
    url = shared_relay.url
    with Relay(url) as relay:
        relay.progress(job, 5, stage="upload", message="Uploading")
    master, slave = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESS_RELAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "progress_relay", "watch", job, "--url", url],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**clean, "COLUMNS": "100", "LINES": "20", "TERM": "xterm"},
    )
    os.close(slave)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(read_all(master)))
    reader.start()
    try:
        eventually(lambda: snapshot(url, job)["subscribers"] >= 1, timeout=30)
        stages = {"upload": 20, "transcribe": 90, "summarize": 100}
        with Relay(url, progress_rate=0) as relay, relay.track(job, stages=stages) as t:
            t.stage("transcribe", message="Transcribing")
            t.log("chunk 1 of 2 done")
            t.progress(0.5, message="halfway")
            t.log("chunk 2 of 2 done", level="warning")
            t.stage("summarize", message="Summarizing")
            t.result = {"words": 1234}
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=10)
        os.close(master)
    text = b"".join(output).decode()
    assert "\r\x1b[2K" in text  # the bar is redrawn in place
    assert "transcribe  [#####" in text and "Transcribing" in text
    assert "55%" in text and "halfway" in text
    assert "   info  chunk 1 of 2 done" in text
    assert "warning  chunk 2 of 2 done" in text
    assert "summarize  [" in text
    assert 'completed: result: {"words": 1234}' in text
    # A log line is written on a cleared line, and the bar drawn again after it.
    after_log = text.split("chunk 1 of 2 done", 1)[1]
    assert after_log.startswith("\r\n\r\x1b[2Ktranscribe")


def test_jobs_prints_a_table(shared_relay: RunningRelay) -> None:
    url = shared_relay.url
    running, done = job_id(), job_id()
    with Relay(url) as relay:
        relay.progress(running, 42, stage="searching")
        relay.complete(done)
    table = cli("jobs", "--status", "running", "--url", url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PERCENT", "STAGE", "UPDATED"]
    row = next(line for line in lines if line.startswith(running))
    assert row.split()[:4] == [running, "running", "42%", "searching"]
    assert not any(line.startswith(done) for line in lines)
    both = cli("jobs", "--status", "running,completed", "--url", url).stdout
    assert running in both and done in both
    one = cli("jobs", "--limit", "1", "--url", url)
    assert len(one.stdout.splitlines()) == 2  # the header and one job


def test_token_mints_a_subscriber_token(tmp_path: Path) -> None:
    minted = cli(
        "token", "report-42", "--ttl", "120", env={"PROGRESS_RELAY_AUTH_JWT_SECRET": SECRET}
    )
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["jobs"] == ["report-42"]
    assert claims["exp"] - claims["iat"] == 120
    config = tmp_path / "relay.toml"
    config.write_text(f'[auth]\njwt_secret = "{SECRET}"\n')
    every = cli("token", "*", "--config", str(config))
    assert jwt.decode(every.stdout.strip(), SECRET, algorithms=["HS256"])["jobs"] == "*"
    missing = cli("token", "report-42")
    assert missing.returncode == 2
    assert "no auth.jwt_secret is configured" in one_line_error(missing)


def test_a_minted_token_opens_the_stream_of_its_job() -> None:
    env = {"PROGRESS_RELAY_AUTH_JWT_SECRET": SECRET, "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token"}
    relay = start_relay(env=env)
    try:
        token = cli("token", "j1", env=env).stdout.strip()
        httpx.post(f"{relay.base_url}/v1/jobs/j1/events", json={"event": "complete"})
        assert httpx.get(f"{relay.base_url}/v1/jobs/j1").status_code == 401
        assert httpx.get(f"{relay.base_url}/v1/jobs/j1", params={"token": token}).status_code == 200
        watched = cli("watch", "j1", "--url", relay.base_url, "--token", token)
        assert watched.returncode == 0, watched.stderr
    finally:
        relay.close()


def test_serve_ignores_the_client_environment() -> None:
    relay = start_relay(env={"PROGRESS_RELAY_URL": "http://x:1", "PROGRESS_RELAY_TOKEN": "t"})
    try:
        assert httpx.get(f"{relay.base_url}/healthz").status_code == 200
    finally:
        relay.close()


def test_publish_through_the_entry_point(shared_relay: RunningRelay) -> None:
    entry = Path(sys.executable).with_name("progress-relay")
    job = job_id()
    result = subprocess.run(
        [str(entry), "publish", job, "log", "--message", "hi", "--url", shared_relay.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert history(shared_relay.url, job)[0]["data"]["message"] == "hi"


def open_streams(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    line = next(
        line for line in metrics.splitlines() if line.startswith("progress_relay_open_streams")
    )
    return float(line.split()[-1])


def watch_process(job: str, url: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESS_RELAY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "progress_relay", "watch", job, "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
    )


def test_watch_waits_for_the_first_event_of_a_job(own_relay: Callable[..., RunningRelay]) -> None:
    running = own_relay()
    job = job_id()
    process = watch_process(job, running.url)
    try:
        eventually(lambda: open_streams(running.url) == 1, timeout=30)
        assert process.poll() is None  # still waiting, not "job not found"
        with Relay(running.url, progress_rate=0) as relay:
            relay.progress(job, 50, stage="reading")
            relay.complete(job, {"pages": 2})
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "reading  [############............]   50%"
    assert lines[-1] == 'completed: result: {"pages": 2}'


def test_watch_of_a_job_deleted_meanwhile_says_not_found(shared_relay: RunningRelay) -> None:
    job = job_id()
    url = shared_relay.url
    with Relay(url) as relay:
        relay.progress(job, 10, stage="reading")
    process = watch_process(job, url)
    try:
        eventually(lambda: snapshot(url, job)["subscribers"] >= 1, timeout=30)
        assert httpx.delete(f"{url}/v1/jobs/{job}").status_code in (200, 204)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 4, err
    assert "job not found" in err and "Traceback" not in err


def test_watch_shows_the_relays_eta_and_none_after_the_end(shared_relay: RunningRelay) -> None:
    job = job_id()
    url = shared_relay.url
    with Relay(url, progress_rate=0) as relay:
        relay.publish(job, "progress", {"percent": 10, "stage": "reading", "eta_seconds": 75})
        relay.progress(job, 20, stage="reading")
        relay.progress(job, 30, stage="reading")
        relay.progress(job, 40, stage="reading")
        relay.progress(job, 100, stage="writing")
        relay.complete(job)
    etas = [event["data"].get("eta_seconds") for event in history(url, job)[:5]]
    assert etas[0] == 75 and etas[4] == 0  # the publisher's own, then the relay's
    result = cli("watch", job, "--url", url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "reading  [##......................]   10%  ETA 1:15"
    for line, eta in zip(lines[1:5], etas[1:5], strict=True):
        shown = None if "ETA " not in line else line.split("ETA ", 1)[1]
        assert shown == (None if eta is None else _duration(eta))
    assert lines[4] == "writing  [########################]  100%  ETA 0:00"
    assert lines[5:] == ["completed"]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def test_watch_in_a_terminal_shows_no_eta_after_complete(shared_relay: RunningRelay) -> None:
    job = job_id()
    url = shared_relay.url
    with Relay(url, progress_rate=0) as relay:
        relay.publish(job, "progress", {"percent": 90, "stage": "writing", "eta_seconds": 6})
        relay.complete(job, {"pages": 1})
    master, slave = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESS_RELAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "progress_relay", "watch", job, "--url", url],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**clean, "COLUMNS": "100", "LINES": "20", "TERM": "xterm"},
    )
    os.close(slave)
    try:
        output = read_all(master)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = output.decode()
    assert "writing  [######################..]   90%  ETA 0:06" in text
    last_bar = text.split("\r\x1b[2K")[-1]
    assert last_bar.startswith("writing  [########################]  100%")
    assert "ETA" not in last_bar
    assert 'completed: result: {"pages": 1}' in last_bar


def test_version_and_help_are_for_users() -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout == f"progress-relay {metadata.version('progress-relay')}\n"
    commands = ["serve", "publish", "watch", "jobs", "token"]
    top = cli("--help")
    assert top.returncode == 0 and "Server-Sent Events" in top.stdout
    for command in commands:
        assert command in top.stdout
    for text in [top.stdout, *(cli(command, "--help").stdout for command in commands)]:
        assert "cli_" not in text and "progress_relay" not in text and "``" not in text
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subcommands.choices) == sorted(commands)
    for name, sub in subcommands.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"{name} {action.dest}"


def test_serve_on_a_busy_address_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    line = one_line_error(result)
    assert line == f"progress-relay: cannot listen on 127.0.0.1:{port}: address already in use"
    assert "listening" not in result.stderr


_RUNNER = """
import json, sys
from progress_relay.cli.main import main
report = sys.argv.pop(1)
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
with open(report, "w") as file:
    json.dump(sorted(sys.modules), file)
sys.exit(status)
"""
SERVER_MODULES = tuple(
    f"progress_relay.{part}" for part in ("http", "core", "brokers", "ops", "wire", "config")
)
SERVER_DEPENDENCIES = ("aiohttp_sse", "redis", "jwt", "prometheus_client", "msgspec")


def server_modules(loaded: list[str]) -> list[str]:
    return [
        name
        for name in loaded
        if name in SERVER_MODULES
        or name.startswith(tuple(f"{module}." for module in SERVER_MODULES))
        or name.split(".", 1)[0] in SERVER_DEPENDENCIES
    ]


def test_server_modules_are_told_apart() -> None:
    assert server_modules(["progress_relay.http.app", "redis.asyncio", "msgspec", "jwt"]) == [
        "progress_relay.http.app", "redis.asyncio", "msgspec", "jwt"
    ]  # fmt: skip
    assert server_modules(["progress_relay.cli.main", "progress_relay.client", "httpx"]) == []


def test_the_client_commands_import_nothing_of_the_server(
    shared_relay: RunningRelay, tmp_path: Path
) -> None:
    finished, url = job_id(), shared_relay.url
    with Relay(url) as relay:
        relay.complete(finished)
    runs = {
        "help": ["--help"],
        "version": ["--version"],
        "publish": ["publish", job_id(), "progress", "--percent", "50", "--url", url],
        "watch": ["watch", finished, "--url", url],
    }
    for name, args in runs.items():
        report = tmp_path / f"{name}.json"
        result = subprocess.run(
            [sys.executable, "-c", _RUNNER, str(report), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (name, result.stderr)
        loaded = json.loads(report.read_text())
        assert "progress_relay.cli.main" in loaded
        assert server_modules(loaded) == [], name


# What an install of the SDK alone has: httpx, with its own dependencies (AsyncRelay, which needs
# aiohttp, is imported only when asked for).
SLIM_DISTRIBUTIONS = ("httpx",)


def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        dist = metadata.distribution(todo.pop())
        name = dist.metadata["Name"].lower()
        if name in found:
            continue
        found[name] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


@pytest.fixture(scope="module")
def slim_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real virtualenv holding only the SDK's dependencies and the package's source (no
    msgspec, aiohttp-sse, redis, pyjwt, prometheus-client, and no installed metadata of
    progress-relay itself)."""
    root = tmp_path_factory.mktemp("slim")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    site = Path(purelib)
    for dist in _closure(SLIM_DISTRIBUTIONS):
        tops = {Path(str(file)).parts[0] for file in dist.files or []}
        for top in tops - {"__pycache__", ".."}:
            source = Path(str(dist.locate_file(top)))
            if source.exists():
                (site / top).symlink_to(source)
    source_root = Path(progress_relay.__file__).parent.parent
    (site / "progress_relay_source.pth").write_text(f"{source_root}\n")
    return python


def slim(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROGRESS_RELAY_", "PYTHON"))}
    return subprocess.run(
        [str(python), "-m", "progress_relay", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


def test_the_slim_environment_has_no_server_dependency(slim_python: Path) -> None:
    for module in (*SERVER_DEPENDENCIES, "aiohttp", "httpx"):
        found = subprocess.run(
            [str(slim_python), "-c", f"import {module}"], capture_output=True, timeout=60
        )
        assert (found.returncode == 0) == (module == "httpx"), module


def test_the_client_commands_work_without_the_servers_dependencies(
    slim_python: Path, shared_relay: RunningRelay
) -> None:
    version = slim(slim_python, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"progress-relay {progress_relay.__version__}\n"
    assert slim(slim_python, "--help").returncode == 0
    job, url = job_id(), shared_relay.url
    published = slim(slim_python, "publish", job, "complete", "--url", url)
    assert published.returncode == 0, published.stderr
    watched = slim(slim_python, "watch", job, "--url", url)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[-1] == "completed"


@pytest.mark.parametrize("command", [["serve"], ["token", "report-42"]])
def test_serve_and_token_say_what_to_install(slim_python: Path, command: list[str]) -> None:
    result = slim(slim_python, *command)
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"progress-relay: {command[0]} needs the server's dependencies: "
        "pip install 'progress-relay[server]'"
    )
