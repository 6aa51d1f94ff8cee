"""``progress-relay``: the command line of progress-relay.

``serve`` runs the relay; ``publish``, ``watch``, ``jobs`` talk to a running one (``remote``,
``watch``); ``token`` mints a subscriber token. The server's modules are imported by ``serve``
and ``token`` only, so that the client commands, ``--help`` and ``--version`` work in an install
without the server's dependencies.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from progress_relay.cli import remote, watch
from progress_relay.cli.remote import EXIT_USAGE, fail, needs_server

if TYPE_CHECKING:
    from progress_relay.config import Settings

log = logging.getLogger("progress_relay")

EXIT_SERVE_FAILED = 1

DESCRIPTION = """\
Relay the progress of long-running jobs to browsers and services over Server-Sent Events.

Run the relay with `progress-relay serve`; publish to it, follow a job or list jobs from any
shell with the other commands. `progress-relay COMMAND --help` describes each command."""

EPILOG = """\
Settings: config/default.toml documents every one; PROGRESS_RELAY_<SECTION>_<KEY> environment
variables override the file, and options override both."""


def version() -> str:
    try:
        return metadata.version("progress-relay")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from progress_relay import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="progress-relay",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"progress-relay {version()}",
        help="print the version",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the relay",
        description="Run the relay until SIGTERM or SIGINT, then drain its streams and requests "
        "within server.shutdown_timeout.",
    )
    serve.add_argument("--host", help="the address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="the port to listen on (server.port)")
    serve.add_argument(
        "--config", metavar="FILE", help="a TOML settings file like config/default.toml"
    )
    serve.add_argument(
        "--broker",
        metavar="URL",
        help="where jobs live: memory:// (one process) or redis://host:port/db (broker.url)",
    )
    serve.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe log messages to write (log.level)",
    )
    serve.set_defaults(run=run_serve)
    common = remote.common_options()
    remote.add_commands(commands, common)
    watch.add_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


@needs_server("serve")
def run_serve(args: argparse.Namespace) -> int:
    from progress_relay.config import ConfigError, check_exposure, load_settings
    from progress_relay.ops import logs

    try:
        settings = load_settings(args.config, overrides=serve_overrides(args))
        check_exposure(settings)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    from progress_relay.ops.server import CannotListen

    logs.configure(settings.log, args.log_level)
    try:
        serve(settings)
    except CannotListen as exc:
        return fail(str(exc), EXIT_SERVE_FAILED)
    return 0


def serve_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings that `serve`'s options set, as ``load_settings(overrides=...)`` takes them."""
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
    return overrides


def serve(settings: Settings) -> None:
    """Serve until a signal; CannotListen when the address cannot be bound."""
    import asyncio

    from progress_relay.http.app import create_app
    from progress_relay.ops import server

    app = create_app(settings)
    server.tune_gc()
    listening = (
        "progress-relay listening on http://%s:%d (broker %s)",
        settings.server.host,
        settings.server.port,
        _redacted(settings.broker.url),
    )
    asyncio.run(server.serve(app, settings, on_listening=lambda: log.info(*listening)))


def _redacted(url: str) -> str:
    """The broker URL for the log, without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
