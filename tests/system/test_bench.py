"""The bench harness (`make bench`) at a tiny scale: every scenario runs against real servers
and reports exact delivery. Timings are printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.scenarios import SCENARIOS
from bench.servers import nchan_available

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_delivers_each_event_once_in_order(tmp_path: Path) -> None:
    servers = ["progress-relay", "naive"] + (["nchan"] if nchan_available() else [])
    command = [
        sys.executable, "-m", "bench",
        "--scale", "0.01", "--runs", "1",
        "--servers", ",".join(servers),
        "--out", str(tmp_path), "--name", "tiny",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for scenario in SCENARIOS:
        assert f"### {scenario} (median of 1 run)" in done.stdout
    assert "| metric | progress-relay | nchan | naive | relay/nchan | relay/naive |" in done.stdout

    report = json.loads((tmp_path / "tiny.json").read_text())
    assert (tmp_path / "tiny.md").read_text().count("### ") == len(SCENARIOS)
    medians = report["medians"]
    assert set(medians) == set(SCENARIOS)
    ran = 0
    for scenario, per_server in medians.items():
        expected = [s for s in SCENARIOS[scenario].servers if s in servers]
        assert sorted(per_server) == sorted(expected), scenario
        for server, metrics in per_server.items():
            where = f"{scenario}/{server}"
            ran += 1
            assert metrics.get("complete", "yes") == "yes", where
            if scenario in ("publish", "publish-redis"):
                assert metrics["publish_errors"] == 0, where
                assert metrics["publish_per_s"] > 0, where
                if scenario == "publish-redis":  # against the memory broker in the same run
                    assert metrics["memory_publish_per_s"] > 0, where
                    assert metrics["redis_vs_memory"] > 0, where
                continue
            assert metrics["lost"] == 0, where
            assert metrics["undelivered"] == 0, where
            assert metrics["duplicates"] == 0, where
            assert metrics["errors"] == 0, where
    # progress-relay: every scenario; the naive relay: all but storm (no resume), many-redis,
    # publish-redis and many-sdk (no SDK).
    assert ran >= len(SCENARIOS) + len(SCENARIOS) - 4
