"""The client commands of the CLI: ``publish``, ``jobs``, ``token`` (``watch`` is in
``cli_watch``), their common options, and one exit status per kind of failure:

0 done; 3 the relay is unreachable (or kept answering 5xx); 4 no such job; 5 the relay refused
the request (4xx: a finished job, a bad event, a missing token); 2 bad arguments or settings.
Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from progress_relay.client import JobNotFound, Relay, RelayError, RelayUnavailable
from progress_relay.config import ConfigError, load_settings
from progress_relay.http.auth import Credentials

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5

Command = Callable[[argparse.Namespace], int]


def common_options() -> argparse.ArgumentParser:
    """``--url``, ``--token`` and ``--retry-budget``, shared by the commands that call a relay."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("PROGRESS_RELAY_URL", "http://127.0.0.1:8080"),
        help="the relay (env PROGRESS_RELAY_URL; default http://127.0.0.1:8080)",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("PROGRESS_RELAY_TOKEN"),
        help="a publisher token, or a subscriber token for reading (env PROGRESS_RELAY_TOKEN)",
    )
    common.add_argument(
        "--retry-budget",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to keep retrying an unreachable relay (default 10)",
    )
    return common


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    publish = commands.add_parser(
        "publish", parents=[common], help="publish one event to a job", description=_PUBLISH
    )
    publish.add_argument("job", metavar="JOB")
    publish.add_argument("event", metavar="EVENT", help="progress, log, content, complete, ...")
    publish.add_argument("--data", metavar="JSON", help="the event's data as JSON")
    publish.add_argument("--percent", type=float, help="data.percent")
    publish.add_argument("--message", help="data.message")
    publish.add_argument("--stage", help="data.stage")
    publish.add_argument("--level", help="data.level (of a log)")
    publish.set_defaults(run=run_publish)

    jobs = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument(
        "--status",
        action="append",
        help="pending, running, completed, failed, cancelled (repeat or comma-separate)",
    )
    jobs.add_argument("--limit", type=int, default=100, help="at most this many jobs (100)")
    jobs.add_argument("--json", action="store_true", help="one snapshot per line, as JSON")
    jobs.set_defaults(run=run_jobs)

    token = commands.add_parser(
        "token",
        help="mint a subscriber token (needs auth.jwt_secret)",
        description="Mint a subscriber token for JOB (or '*' for every job), signed with "
        "auth.jwt_secret from --config FILE or PROGRESS_RELAY_AUTH_JWT_SECRET.",
    )
    token.add_argument("jobs", metavar="JOB", nargs="+")
    token.add_argument("--ttl", type=float, help="seconds the token is valid (auth.token_ttl)")
    token.add_argument("--config", metavar="FILE", help="a TOML file like config/default.toml")
    token.set_defaults(run=run_token)


_PUBLISH = (
    "Publish one event. DATA comes from --data, and --percent, --message, --stage and --level "
    "set single fields of it: `publish job-1 progress --percent 40 --stage search`."
)


def relay_for(args: argparse.Namespace) -> Relay:
    return Relay(args.url, args.token, progress_rate=0, retry_budget=args.retry_budget)


def guarded(command: Command) -> Command:
    """The command with every relay error turned into one line and its exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except RelayUnavailable as error:
            return fail(f"the relay is unavailable: {error.message}", EXIT_UNAVAILABLE)
        except JobNotFound as error:
            return fail(f"job not found: {error.message}", EXIT_NOT_FOUND)
        except RelayError as error:
            return fail(f"the relay refused: {error}", EXIT_REFUSED)

    return run


def fail(message: str, status: int) -> int:
    print(f"progress-relay: {message}", file=sys.stderr)
    return status


@guarded
def run_publish(args: argparse.Namespace) -> int:
    data: Any = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except ValueError as error:
            return fail(f"--data is not valid JSON: {error}", EXIT_USAGE)
    fields = {
        name: value
        for name in ("percent", "message", "stage", "level")
        if (value := getattr(args, name)) is not None
    }
    if fields:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return fail("--percent/--message/--stage/--level need --data to be an object", 2)
        data.update(fields)
    with relay_for(args) as relay:
        published = relay.publish(args.job, args.event, data)
    assert published is not None  # coalescing is off
    print(json.dumps({"ids": published.ids, "cancel_requested": published.cancel_requested}))
    return 0


@guarded
def run_jobs(args: argparse.Namespace) -> int:
    statuses = [s for value in args.status or () for s in value.split(",") if s]
    if args.limit < 1:
        return fail("--limit must be at least 1", EXIT_USAGE)
    rows: list[dict[str, Any]] = []
    with relay_for(args) as relay:
        for job in relay.jobs(statuses or None, page_size=min(args.limit, 1000)):
            rows.append(job)
            if len(rows) >= args.limit:
                break
    if args.json:
        for job in rows:
            print(json.dumps(job))
    else:
        print(jobs_table(rows))
    return 0


def jobs_table(jobs: list[dict[str, Any]]) -> str:
    header = ("ID", "STATUS", "PERCENT", "STAGE", "UPDATED")
    rows = [
        (
            str(job.get("id", "")),
            str(job.get("status", "")),
            _percent(job.get("percent")),
            str(job.get("stage") or "-"),
            str(job.get("updated_at") or "-").replace("T", " ")[:19],
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i == 2 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in [header, *rows]
    ]
    if not rows:
        lines.append("(no jobs)")
    return "\n".join(lines)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}%"


def run_token(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        return fail(str(error), EXIT_USAGE)
    credentials = Credentials(settings.auth)
    if not credentials.can_mint:
        return fail(
            "no auth.jwt_secret is configured: set PROGRESS_RELAY_AUTH_JWT_SECRET or "
            "auth.jwt_secret in the file given with --config",
            EXIT_USAGE,
        )
    if args.ttl is not None and args.ttl <= 0:
        return fail("--ttl must be greater than 0", EXIT_USAGE)
    jobs: list[str] | str = "*" if "*" in args.jobs else list(args.jobs)
    print(credentials.mint(jobs, args.ttl))
    return 0
