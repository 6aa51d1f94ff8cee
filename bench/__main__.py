"""``python -m bench``: run the scenarios against progress-relay, Nchan and the naive relay.

Options also come from the environment (what ``make bench SCENARIOS=fanout RUNS=1`` passes):
SCENARIOS (comma-separated), RUNS, SCALE, SERVERS. The load generator pins itself to CPU 1 and
the servers run on CPU 0 when there are two.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import servers
from bench.report import Results, correctness_failures, render, write
from bench.scenarios import SCENARIOS, Options

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        default=env.get("SCENARIOS") or ",".join(SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--runs", type=int, default=int(env.get("RUNS") or 3))
    parser.add_argument(
        "--scale",
        type=float,
        default=float(env.get("SCALE") or 1.0),
        help="multiplies subscriber and event counts (and shortens durations); 0.1 for a smoke run",
    )
    parser.add_argument(
        "--servers",
        default=env.get("SERVERS") or "progress-relay,nchan,naive",
        help="comma-separated subset of progress-relay, nchan, naive",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where the results go (default: bench/results/ for a full run of every scenario "
        "and server at scale 1, else bench/results/scratch/, which git ignores)",
    )
    parser.add_argument("--name", help="file name stem (default: the UTC date and time)")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.out is None:
        full = (
            args.scale == 1.0
            and set(args.scenarios) == set(SCENARIOS)
            and {"progress-relay", "nchan", "naive"} <= set(args.servers)
        )
        args.out = RESULTS if full else RESULTS / "scratch"
    return args


def raise_open_files() -> int:
    """10,000 streams are 10,000 descriptors here and at the server; children inherit this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "-"

    def command(*args: str) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return "-"
        return (
            (done.stdout + done.stderr).strip().splitlines()[0]
            if done.stdout + done.stderr
            else "-"
        )

    server_cpu, load_cpu = servers.cpus()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pinning": f"servers on CPU {server_cpu}, load on CPU {load_cpu}"
        if server_cpu is not None
        else "none (one CPU)",
        "progress-relay": version("progress-relay"),
        "aiohttp": version("aiohttp"),
        "aiohttp-sse": version("aiohttp-sse"),
        "uvloop (generator)": version("uvloop"),
        "nginx": command(servers.NGINX, "-v"),
        "nchan": command("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"),
        "redis": command(servers.REDIS_SERVER, "--version"),
    }


async def run(args: argparse.Namespace) -> Results:
    options = Options(scale=args.scale)
    results: Results = {}
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        per_server = results.setdefault(name, {})
        for run_index in range(args.runs):
            # Servers take turns within each run, so drift on a shared machine hits all alike.
            for server_name, factory in scenario.servers.items():
                if server_name not in args.servers:
                    continue
                if server_name == "nchan" and not servers.nchan_available():
                    print("bench: Nchan is not installed; skipping it", file=sys.stderr)
                    continue
                started = time.perf_counter()
                with factory() as server:
                    metrics = await scenario.run(server, options)
                per_server.setdefault(server_name, []).append(metrics)
                print(
                    f"bench: {name} run {run_index + 1}/{args.runs} {server_name}: "
                    f"{_brief(metrics)} ({time.perf_counter() - started:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def _brief(metrics: dict[str, Any]) -> str:
    keys = ("delivered_per_s", "publish_per_s", "latency_p99_ms", "kb_per_stream", "catch_up_s",
            "lost", "duplicates")  # fmt: skip
    return ", ".join(
        f"{k}={metrics[k]:.1f}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
        for k in keys
        if k in metrics
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_open_files()
    _, load_cpu = servers.cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    # SIGTERM ends the run like Ctrl-C does, through the finally below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    loop_factory: Any = None
    if os.environ.get("BENCH_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            print(
                "bench: uvloop is not installed; the generator uses asyncio's loop", file=sys.stderr
            )
    meta = machine()
    meta["generator loop"] = "uvloop" if loop_factory is not None else "asyncio"
    meta["runs"] = args.runs
    meta["scale"] = args.scale
    meta["command"] = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            results = runner.run(run(args))
    except KeyboardInterrupt:
        print("bench: interrupted; every server it started is stopped", file=sys.stderr)
        return 130
    finally:
        servers.kill_all()
    meta["duration_s"] = round(time.perf_counter() - started, 1)
    markdown, summary = render(results, args.runs)
    print(markdown)
    stem = args.name or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M")
    md_path, json_path = write(args.out, stem, markdown, summary, meta, results)
    print(f"\nbench: wrote {md_path} and {json_path} in {meta['duration_s']} s", file=sys.stderr)
    failures = correctness_failures(summary)
    for failure in failures:
        print(f"bench: DELIVERY FAILURE {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
