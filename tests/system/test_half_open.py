"""2,000 connections abandoned without a FIN: the relay notices and releases them.

The probe (tests/support/half_open_probe.py) runs in a network namespace of its own, where it can
make the clients' address vanish (a blackhole route) without touching the rest of the machine.
`stream.write_timeout` is 1 s there: it is the sockets' TCP_USER_TIMEOUT, so the kernel gives up
on a peer that stops acknowledging the heartbeats and the relay lets the stream go.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COUNT = 2000


def test_vanished_clients_are_released_and_the_rest_goes_on() -> None:
    completed = subprocess.run(
        [
            "unshare",
            "--map-root-user",
            "--net",
            sys.executable,
            "-m",
            "tests.support.half_open_probe",
            str(COUNT),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"\n{result}")
    assert result["streams_before"] == COUNT + 1
    assert result["connections_before"] == COUNT + 1
    # Every vanished stream is gone, the control stream stays and still gets its events.
    assert result["streams_after"] == 1
    assert result["connections_after"] == 1
    assert result["control_stream_works"] is True
