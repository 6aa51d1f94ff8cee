"""``progress-relay serve|publish|watch|jobs|token``: run the relay, or talk to one.

``serve [--host] [--port] [--config FILE] [--broker URL]`` runs it; the client commands are in
``cli_client`` (publish, jobs, token) and ``cli_watch`` (watch).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from progress_relay.cli import remote as cli_client
from progress_relay.cli import watch as cli_watch
from progress_relay.config import ConfigError, Settings, load_settings
from progress_relay.http.app import create_app
from progress_relay.ops import logs, server

log = logging.getLogger("progress_relay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="progress-relay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the relay")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port)")
    serve.add_argument("--config", metavar="FILE", help="a TOML file like config/default.toml")
    serve.add_argument(
        "--broker", metavar="URL", help="memory:// or redis://host:port/db (broker.url)"
    )
    serve.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log.level"
    )
    serve.set_defaults(run=run_serve)
    common = cli_client.common_options()
    cli_client.add_commands(commands, common)
    cli_watch.add_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def run_serve(args: argparse.Namespace) -> int:
    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    overrides: dict[str, dict[str, Any]] = {}
    if server:
        overrides["server"] = server
    if args.broker is not None:
        overrides["broker"] = {"url": args.broker}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"progress-relay: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log, args.log_level)
    serve(settings)
    return 0


def serve(settings: Settings) -> None:
    log.info(
        "progress-relay listening on http://%s:%d (broker %s)",
        settings.server.host,
        settings.server.port,
        _redacted(settings.broker.url),
    )
    app = create_app(settings)
    server.tune_gc()
    asyncio.run(server.serve(app, settings))


def _redacted(url: str) -> str:
    """The broker URL for the log, without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
