"""A real webhook receiver: an aiohttp server on a free port of 127.0.0.1 that answers each
request as its script says ("fail": 500, "redirect": 302 to itself, "hang": no answer until
released or the test ends, "ok": 204; past the script, "ok") and keeps every request it got."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answer: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def verify(secret: str, received: Received) -> bool:
    """The receiver's check, as docs/api.md shows it."""
    h = received.headers
    signed = f"{h['Webhook-Id']}.{h['Webhook-Timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return any(
        hmac.compare_digest(sig.removeprefix("v1,").encode(), expected)
        for sig in h["Webhook-Signature"].split()
    )


class Receiver:
    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.received: list[Received] = []
        self.url = ""
        self.origin = ""
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        answer = self.script.pop(0) if self.script else "ok"
        body = await request.read()
        async with self._arrived:
            self.received.append(Received(dict(request.headers), body, answer))
            self._arrived.notify_all()
        if answer == "fail":
            return web.Response(status=500)
        if answer == "redirect":
            raise web.HTTPFound(self.url + "?again")
        if answer == "hang":
            await self._release.wait()
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The first ``count`` requests, once they have all arrived."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received[:count]

    def release(self) -> None:
        """Requests that hang get their answer now."""
        self._release.set()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx at once (not those that hung)."""
        return [r for r in self.received if r.answer == "ok"]


@asynccontextmanager
async def receiver(script: list[str] | None = None) -> AsyncIterator[Receiver]:
    made = Receiver(script or [])
    app = web.Application()
    app.router.add_post("/hook", made._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    made.origin = f"http://127.0.0.1:{port}"
    made.url = f"{made.origin}/hook"
    try:
        yield made
    finally:
        made.release()
        await runner.cleanup()
