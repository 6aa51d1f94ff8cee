"""The client commands of the CLI: ``publish``, ``jobs``, ``token`` (``watch`` is in
``progress_relay.cli.watch``), their common options, and one exit status per kind of failure:

0 done; 3 the relay is unreachable (or kept answering 5xx); 4 no such job; 5 the relay refused
the request (4xx: a finished job, a bad event, a missing token); 2 bad arguments or settings.
Every failure is one line on stderr, never a traceback. Only the SDK and the standard library
are imported here; ``token`` imports the server's modules when it runs (see ``needs_server``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from progress_relay.client.constants import DEFAULT_URL
from progress_relay.client.errors import JobNotFound, RelayError, RelayUnavailable
from progress_relay.client.sync import Relay

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5

Command = Callable[[argparse.Namespace], int]

# What the server needs beyond the SDK: the `server` extra of the package.
SERVER_DEPENDENCIES = frozenset(
    {"aiohttp", "aiohttp_sse", "jwt", "msgspec", "prometheus_client", "redis"}
)


def needs_server(name: str) -> Callable[[Command], Command]:
    """A command that imports the server's modules: one line and exit 2 when they cannot be,
    because the server's dependencies are not installed."""

    def decorate(command: Command) -> Command:
        @wraps(command)
        def run(args: argparse.Namespace) -> int:
            try:
                return command(args)
            except ModuleNotFoundError as error:
                if (error.name or "").split(".", 1)[0] not in SERVER_DEPENDENCIES:
                    raise
                return fail(
                    f"{name} needs the server's dependencies: pip install 'progress-relay[server]'",
                    EXIT_USAGE,
                )

        return run

    return decorate


def common_options() -> argparse.ArgumentParser:
    """``--url``, ``--token`` and ``--retry-budget``, shared by the commands that call a relay."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("PROGRESS_RELAY_URL", DEFAULT_URL),
        help=f"the relay's base URL (env PROGRESS_RELAY_URL; default {DEFAULT_URL})",
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
    publish.add_argument("job", metavar="JOB", help="the job's id (created if unknown)")
    publish.add_argument(
        "event",
        metavar="EVENT",
        help="the event's name: progress, log, content, complete, failed, cancelled, or your own",
    )
    publish.add_argument("--data", metavar="JSON", help="the event's data, a JSON value")
    publish.add_argument("--percent", type=float, help="set data.percent (0-100, of a progress)")
    publish.add_argument("--message", help="set data.message")
    publish.add_argument("--stage", help="set data.stage (of a progress)")
    publish.add_argument(
        "--level", help="set data.level of a log: debug, info, success, warning, error"
    )
    publish.set_defaults(run=run_publish)

    jobs = commands.add_parser(
        "jobs",
        parents=[common],
        help="list jobs, newest first",
        description="List the relay's jobs, newest first, as a table or as JSON.",
    )
    jobs.add_argument(
        "--status",
        action="append",
        help="only jobs in this status: pending, running, completed, failed, cancelled "
        "(repeat or comma-separate for several)",
    )
    jobs.add_argument("--limit", type=int, default=100, help="at most this many jobs (default 100)")
    jobs.add_argument(
        "--json", action="store_true", help="print each job's snapshot as one line of JSON"
    )
    jobs.set_defaults(run=run_jobs)

    token = commands.add_parser(
        "token",
        help="mint a subscriber token (needs auth.jwt_secret)",
        description="Mint a subscriber token for JOB (or '*' for every job), signed with "
        "auth.jwt_secret from --config FILE or PROGRESS_RELAY_AUTH_JWT_SECRET.",
    )
    token.add_argument("jobs", metavar="JOB", nargs="+", help="a job the token may read, or '*'")
    token.add_argument(
        "--ttl", type=float, help="seconds the token is valid (default auth.token_ttl)"
    )
    token.add_argument(
        "--config", metavar="FILE", help="a TOML settings file like config/default.toml"
    )
    token.set_defaults(run=run_token)


_PUBLISH = (
    "Publish one event. DATA comes from --data, and --percent, --message, --stage and --level "
    "set single fields of it: `publish job-1 progress --percent 40 --stage search`."
)


def relay_for(args: argparse.Namespace) -> Relay:
    # One command, one job: nothing to batch across jobs, so no window to wait for.
    return Relay(
        args.url, args.token, progress_rate=0, retry_budget=args.retry_budget, batch_window=0
    )


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


@needs_server("token")
def run_token(args: argparse.Namespace) -> int:
    from progress_relay.config import ConfigError, load_settings
    from progress_relay.http.auth import Credentials

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
