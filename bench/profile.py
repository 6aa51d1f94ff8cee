"""A py-spy profile of one relay under one scenario's load, as the shares of the relay's main
thread (docs/performance.md, "Issue 17, the last round").

    .venv/bin/python -m bench.profile publish          # the memory broker
    .venv/bin/python -m bench.profile publish --redis  # one relay on Redis
    .venv/bin/python -m bench.profile idle
    .venv/bin/python -m bench.profile many           # 10,000 streams, 10,000 publishes/s asked

py-spy (the ``bench`` extra) samples the relay at 200 Hz while the load runs; the tree shows
every frame that holds at least ``--min`` % of the samples, with its children.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import servers
from bench.publisher import payload
from bench.scenarios import Options, _saturate, idle, many

PY_SPY = Path(sys.executable).with_name("py-spy")
Tree = dict[str, tuple[list[int], "Tree"]]


def _record(pid: int, out: Path, seconds: float, after: float) -> threading.Thread:
    def run() -> None:
        time.sleep(after)
        command = [str(PY_SPY), "record", "-p", str(pid), "-f", "raw", "-o", str(out),
                   "-r", "200", "-d", str(int(seconds))]  # fmt: skip
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def _publish_load(server: servers.Server, seconds: float) -> float:
    def request(job: str, port: int) -> bytes:
        return server.publish_request(job, port, payload(0))

    tally, elapsed, _ = await _saturate(server, seconds, request)
    return tally.accepted / elapsed


def tree(raw: Path, root: str = "Handle._run") -> tuple[int, Tree]:
    """The main thread's samples below ``root``: (all of them, the tree)."""
    top: Tree = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any("concurrent/futures/thread.py" in frame for frame in frames):
            continue  # idle executor threads
        total += int(count)
        start = next((i for i, frame in enumerate(frames) if root in frame), None)
        node = top
        for frame in frames[start:] if start is not None else []:
            name, _, where = frame.partition(" (")
            entry = node.setdefault(f"{name} ({where.rsplit('/', 1)[-1]}", ([0], {}))
            entry[0][0] += int(count)
            node = entry[1]
    return total, top


def show(total: int, node: Tree, minimum: float, depth: int = 0) -> None:
    for name, (count, children) in sorted(node.items(), key=lambda item: -item[1][0][0]):
        share = 100.0 * count[0] / max(1, total)
        if share >= minimum:
            print(f"{'  ' * depth}{share:5.1f}% {name}")
            show(total, children, minimum, depth + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=("publish", "idle", "many"))
    parser.add_argument("--redis", action="store_true", help="one relay on a redis-server")
    parser.add_argument("--seconds", type=float, default=6.0, help="of publishing (publish)")
    parser.add_argument(
        "--after",
        type=float,
        help="seconds before sampling (idle 7, many 4; more on a slow host)",
    )
    parser.add_argument("--min", type=float, default=1.0, help="smallest share shown, %%")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(servers.redis_server()) if args.redis else None
        server = stack.enter_context(servers.progress_relay(redis_url=url))
        out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "profile.txt"
        pid = server.processes[0].pid
        if args.scenario == "publish":
            asyncio.run(_publish_load(server, 1.0))  # warm up
            spy = _record(pid, out, args.seconds, after=0.0)
            time.sleep(0.5)
            rate = asyncio.run(_publish_load(server, args.seconds))
            print(f"publishes/s while profiled: {rate:,.0f}")
        elif args.scenario == "many":
            # The first phase, after 10,000 opens.
            spy = _record(pid, out, 8, after=4.0 if args.after is None else args.after)
            metrics = asyncio.run(many(server, Options()))
            print(
                f"publishes/s reached {metrics['publish_per_s']:,.0f}, p99 at the target "
                f"{metrics['latency_p99_at_target_ms']:.1f} ms"
            )
        else:
            # The hold, after 10,000 opens and a publish each.
            spy = _record(pid, out, 10, after=7.0 if args.after is None else args.after)
            metrics = asyncio.run(idle(server, Options()))
            print(
                f"KB per stream {metrics['kb_per_stream']:.1f}, CPU s {metrics['cpu_s_idle']:.2f}"
            )
        spy.join()
        total, top = tree(out)
        print(f"main-thread samples: {total}")
        show(total, top, args.min)


if __name__ == "__main__":
    main()
