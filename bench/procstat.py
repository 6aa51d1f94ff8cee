"""Memory and CPU of processes, from /proc: VmRSS/VmHWM (kB) and utime+stime (clock ticks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    rss_kb: int  # VmRSS summed over the processes
    peak_kb: int  # VmHWM summed over the processes
    cpu_s: float  # utime + stime summed, seconds


def _status(pid: int) -> tuple[int, int]:
    rss = peak = 0
    with open(f"/proc/{pid}/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                peak = int(line.split()[1])
    return rss, peak


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    # Fields after the command (which may hold spaces) start after its closing parenthesis;
    # utime and stime are fields 14 and 15 of the line.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def usage(pids: Iterable[int]) -> Usage:
    rss = peak = ticks = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            one_rss, one_peak = _status(pid)
            ticks += _cpu_ticks(pid)
            rss += one_rss
            peak += one_peak
    return Usage(rss, peak, ticks / _TICKS)


def run_queue_wait(pids: Iterable[int]) -> float:
    """Seconds the processes were runnable but waiting for a CPU (/proc/<pid>/schedstat): on a
    shared machine, the time other programs took from them."""
    waited = 0
    for pid in pids:
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/schedstat", "rb") as fh,
        ):
            waited += int(fh.read().split()[1])
    return waited / 1e9


def self_cpu() -> float:
    """CPU seconds of this process (the load generator)."""
    times = os.times()
    return times.user + times.system


class Sampler:
    """Samples the servers' RSS while a measurement runs; the peak of the sum is kept (VmHWM
    alone is per process, and the sum of per-process peaks overstates a group)."""

    def __init__(self, pids: Sequence[int], interval: float = 0.2) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.peak_rss_kb = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> Usage:
        now = usage(self.pids)
        self.peak_rss_kb = max(self.peak_rss_kb, now.rss_kb)
        return now

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()
