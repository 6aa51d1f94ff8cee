"""Serving until SIGTERM/SIGINT, then draining within the grace period.

aiohttp's own shutdown stops reading request bodies at once, so a publish whose body is still
arriving would be lost; the drain here does it in the order a relay needs instead:

1. stop accepting connections (and /readyz answers 503 on the ones already open);
2. end every stream with a jittered `retry:` (its client reconnects, to another instance);
3. wait for the requests in progress, publishes above all, to finish;
4. close what is left; whatever is still running when ``server.shutdown_timeout`` is up is cut.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import time
from collections.abc import Callable

from aiohttp import web

from progress_relay.config import Settings
from progress_relay.http.keys import CONNECTIONS, HUB, IN_FLIGHT
from progress_relay.ops import fds
from progress_relay.ops.access_log import RedactingAccessLogger
from progress_relay.ops.listener import Site

log = logging.getLogger("progress_relay")

# What aiohttp's cleanup gets at the end of the grace period to cancel stragglers.
_CUT = 0.25


class CannotListen(Exception):
    """The address could not be bound (in use, not local, privileged)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


_REASONS = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EACCES: "permission denied",
}


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Every open stream holds a few hundred objects that each full collection walks. With the
    default thresholds (a young collection every 700 allocations), opening 10,000 streams ran
    about a dozen full collections, 4 of the 5 seconds it took, and at 2,000 publishes/s over
    those streams the collector's pauses put the p99 delivery latency at 280 ms (28 ms without).
    What exists at start-up (modules, the app) is frozen out of the collector; young collections
    run every 50,000 allocations. Garbage without cycles is freed by reference counting as before.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


async def serve(
    app: web.Application, settings: Settings, on_listening: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, then drain. ``on_listening`` is called once the address is
    bound; CannotListen if it cannot be."""
    server = settings.server
    fd_limits = fds.raise_limit()
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=_CUT,
    )
    await runner.setup()
    # Clients reconnect in storms (a deploy, a proxy restart): aiohttp's 128 would drop SYNs
    # and cost each of them a second. The kernel caps it at net.core.somaxconn.
    site = Site(
        runner,
        app[CONNECTIONS],
        server.host,
        server.port,
        backlog=4096,
        errors=fds.AcceptErrors(),
    )
    started: float | None = None
    try:
        try:
            await site.start()
        except OSError as exc:
            reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
            raise CannotListen(f"{server.host}:{server.port}", reason) from None
        log.info("%s", fd_limits)
        if on_listening is not None:
            on_listening()
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await signalled.wait()
        started = time.monotonic()
        log.info("draining: %d open streams", app[HUB].streams)
        await site.stop()
        app[HUB].shutdown()
        try:
            async with asyncio.timeout(max(0.0, server.shutdown_timeout - _CUT)):
                await app[IN_FLIGHT].idle()
        except TimeoutError:
            log.warning(
                "%d requests still running after the grace period; cutting them",
                app[IN_FLIGHT].count,
            )
    finally:
        await runner.cleanup()
    if started is not None:
        log.info("stopped after draining for %.2f s", time.monotonic() - started)
