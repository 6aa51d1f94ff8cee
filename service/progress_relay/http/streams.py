"""SSE streams: one job, or several jobs on one connection."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
from types import TracebackType
from typing import cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp_sse import EventSourceResponse

from progress_relay.config import Settings
from progress_relay.core import stalls
from progress_relay.core.catchup import REPLAY_MODES, ReplayMode
from progress_relay.core.flusher import chunked
from progress_relay.core.stalls import StallWatch
from progress_relay.core.subscriber import Subscriber
from progress_relay.http import params
from progress_relay.http.keys import CLIENTS, HUB, SETTINGS, STALLS
from progress_relay.http.openapi_operation import Body, Operation, Parameter, Schema, ref
from progress_relay.wire import sse
from progress_relay.wire.errors import (
    BrokerUnavailable,
    InvalidJobId,
    InvalidParameter,
    JobNotFound,
    PayloadTooLarge,
    ShuttingDown,
    TooManyStreams,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_PARAMETERS: tuple[Parameter, ...] = (
    {
        "name": "Last-Event-ID",
        "in": "header",
        "description": "resume after this id; sent by EventSource when it reconnects. "
        "Wins over the query parameter",
        "schema": {"type": "string"},
    },
    {
        "name": "last_event_id",
        "in": "query",
        "description": "resume after this id, for a new EventSource that cannot set headers",
        "schema": {"type": "string"},
    },
    {
        "name": "replay",
        "in": "query",
        "description": "what to send when there is no last id",
        "schema": {"enum": list(REPLAY_MODES), "default": "history"},
    },
)
_ERRORS = (InvalidJobId, InvalidParameter, TooManyStreams, ShuttingDown, BrokerUnavailable)
# A stream's socket gets a kernel send buffer of this share of stream.queue_bytes (Linux holds
# about 1.5 times the size set): it pushes back, and waiting progress is conflated, long before
# the bound, which counts the kernel's queue too. Left alone, Linux grows it to megabytes.
SEND_BUFFER_SHARE = 8


def _responses(event_schema: str) -> dict[int, tuple[str, Body | None]]:
    return {
        200: (
            "The stream: a `retry` frame, then events and `: ping` comments. It ends after the "
            "terminal event, deletion, eviction or shutdown.",
            ("text/event-stream", ref(event_schema)),
        ),
        204: ("Nothing will ever come: EventSource stops reconnecting", None),
    }


def _jobs_parameter(settings: Settings) -> Schema:
    most = settings.limits.max_stream_jobs
    return {
        "name": "job",
        "in": "query",
        "required": True,
        "description": f"repeated; duplicates count once; at most {most}",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": ref("JobId"), "minItems": 1},
    }


# No HEAD: a stream has no headers-only form, and answering one would open a subscriber.


_CHILDREN: Parameter = {
    "name": "children",
    "in": "query",
    "description": "a group's stream: the parent's and every child's events, each frame's data "
    'wrapped `{"job": ID, "data": PAYLOAD}` as on /v1/stream',
    "schema": {"type": "boolean", "default": False},
}


@routes.get("/v1/jobs/{job_id}/stream", allow_head=False)
@Operation(
    "streamJob",
    "The SSE stream of one job (with `children=true`, of its group)",
    "subscriber",
    parameters=(*_PARAMETERS, _CHILDREN),
    responses=_responses("JobStreamEvent"),
    errors=(*_ERRORS, JobNotFound),
)
async def stream_job(request: web.Request) -> web.StreamResponse:
    job_id = params.job_id(request)
    if params.choice_param(request, "children", ("false", "true")) == "true":
        children = await request.app[HUB].children(job_id)
        return await _stream(request, [job_id, *children], multi=True, group=True)
    return await _stream(request, [job_id], multi=False)


@routes.get("/v1/stream", allow_head=False)
@Operation(
    "streamJobs",
    "One SSE stream for several jobs",
    "subscriber",
    parameters=(_jobs_parameter, *_PARAMETERS),
    responses=_responses("MultiStreamEvent"),
    errors=(*_ERRORS, PayloadTooLarge),
)
async def stream_jobs(request: web.Request) -> web.StreamResponse:
    """One stream for several jobs; each frame's data is ``{"job": ID, "data": PAYLOAD}``."""
    names = request.query.getall("job", [])
    if not names:
        raise InvalidParameter("name at least one job: /v1/stream?job=A&job=B")
    limit = request.app[SETTINGS].limits.max_stream_jobs
    job_ids = list(dict.fromkeys(params.check_job_id(name, "`job`") for name in names))
    if len(job_ids) > limit:
        raise PayloadTooLarge(
            f"a stream follows at most {limit} jobs (limits.max_stream_jobs), got {len(job_ids)}"
        )
    return await _stream(request, job_ids, multi=True)


async def _stream(
    request: web.Request, job_ids: list[str], *, multi: bool, group: bool = False
) -> web.StreamResponse:
    # The header wins: a browser reconnecting on its own sends it, while the URL still carries
    # the `last_event_id` the page started with.
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    mode = cast(ReplayMode, params.choice_param(request, "replay", REPLAY_MODES))
    hub = request.app[HUB]
    settings = request.app[SETTINGS].stream
    client = request.app[CLIENTS].of(request)
    subscriber = await hub.open(
        job_ids, last_event_id, mode, multi=multi, client=client, group=group
    )
    if subscriber is None:
        # Nothing will ever come (finished and seen, or gone): 204 stops EventSource reconnecting.
        hub.counts.no_content += 1
        return web.Response(status=204)
    # send_timeout: the socket's TCP_USER_TIMEOUT, so the
    # kernel gives up on a peer that stopped acknowledging (gone without a FIN); a little past
    # the write timeout, so the stall watch drops a stopped client first (core/stalls.py).
    response = _EventStream(
        sep=sse.SEPARATOR,
        send_timeout=stalls.kernel_timeout(settings.write_timeout),
    )
    response.headers["Cache-Control"] = "no-cache, no-transform"
    transport = request.transport
    protocol = request.protocol
    body = None
    if transport is not None:
        stall_watch = request.app[STALLS]
        body = _Body(transport, protocol, framed=request.version >= (1, 1))
        body.watched_by(stall_watch, subscriber)
        body.limit_kernel_buffer(settings.queue_bytes // SEND_BUFFER_SHARE)
        subscriber.connect(body)
    counts = hub.counts
    try:
        writer = await response.prepare(request)
        # The head is serialized (it goes out with the first chunk): nothing reads these headers
        # again, and an open stream would hold them, ~1 KB, for as long as it is open.
        response.headers.clear()
        async with response:
            # The first chunk (`retry:` and the replay) goes out with the response's head.
            chunk = await subscriber.next_chunk()
            if chunk is None or body is None or writer is None:
                return response
            async with asyncio.timeout(settings.write_timeout):
                await response.write(chunk)
            counts.writes += 1
            counts.delivered += subscriber.taken
            body.writer = writer
            subscriber.go_live()
            hub.heartbeat.add(subscriber)
            stall_watch.written(subscriber)  # its first look measures what is waiting
            while (chunk := await subscriber.next_chunk()) is not None:
                if chunk:
                    body.write(chunk)
                    counts.writes += 1
                    counts.delivered += subscriber.taken
                if protocol.writing_paused:
                    # Only here can a write block: a timer per wait, none per write.
                    subscriber.writing = True
                    try:
                        async with asyncio.timeout(settings.write_timeout):
                            await writer.drain()
                    finally:
                        subscriber.writing = False
        return response
    except TimeoutError:
        log.info("dropped a stream whose client read nothing for %ss", settings.write_timeout)
        counts.write_timeouts += 1
        subscriber.drop()  # cuts the connection; the client resumes with its last id
        return response
    except ConnectionResetError:
        return response  # the client went away; nothing to report
    finally:
        subscriber.disconnect()
        hub.close(subscriber)


class _EventStream(EventSourceResponse):
    """aiohttp-sse's response (its headers, chunked body and TCP_USER_TIMEOUT) without its ping
    task per stream: the Hub's one heartbeat timer writes every live stream's comment
    (core/heartbeat.py). ``prepare`` is aiohttp-sse's without starting the task, and leaving
    the ``async with`` has no task to stop."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared or (not self._allow_all_methods and request.method != "GET"):
            return await super().prepare(request)  # aiohttp-sse's: 405 to all but a GET
        self._set_tcp_user_timeout(request)
        writer = await web.StreamResponse.prepare(self, request)
        self.enable_chunked_encoding()
        return writer

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


class _Body:
    """The stream's ``Socket`` (core/subscriber.py): writes to the response's body straight to
    the transport once the head is out, the same bytes aiohttp would write, without a coroutine
    per write. (A class, not closures: a stream holds it as long as it is open, and this is the
    smaller.) It relies on aiohttp 3's transport and protocol, hence aiohttp < 4."""

    __slots__ = ("_fd", "_owner", "_protocol", "_stalls", "_transport", "framed", "writer")

    def __init__(
        self, transport: asyncio.Transport, protocol: BaseProtocol, *, framed: bool
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        sock = transport.get_extra_info("socket")
        self._fd: int = -1 if sock is None else sock.fileno()
        self.framed = framed  # HTTP-chunked; HTTP/1.0 bodies are not
        # aiohttp's writer, for its count of bytes written (set once the head is out)
        self.writer: AbstractStreamWriter | None = None
        # Told of every write: the stall watch looks only at streams written to (core/stalls.py).
        self._stalls: StallWatch | None = None
        self._owner: Subscriber | None = None

    def watched_by(self, stalls: StallWatch, owner: Subscriber) -> None:
        self._stalls = stalls
        self._owner = owner

    def write(self, piece: bytes) -> None:
        self.write_framed(chunked(piece) if self.framed else piece)

    def write_framed(self, data: bytes) -> None:
        if self._send(data) and self._stalls is not None and self._owner is not None:
            self._stalls.written(self._owner)

    def beat(self, comment: bytes) -> None:
        self._send(chunked(comment) if self.framed else comment)  # not told to the stall watch

    def _send(self, data: bytes) -> bool:
        """Write ``data`` to the transport, counted as aiohttp counts it; False when the client
        went away (the handler is being cancelled) and nothing was written."""
        if self._transport.is_closing():
            return False
        if self.writer is not None:
            self.writer.output_size += len(data)
        self._transport.write(data)
        return True

    def pushing_back(self) -> bool:
        return self._protocol.writing_paused

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() + kernel_unsent(self._fd)

    def written(self) -> int:
        writer = self.writer
        return 0 if writer is None else writer.output_size

    def abort(self) -> None:
        self._transport.abort()

    def limit_kernel_buffer(self, size: int) -> None:
        """Set the socket's send buffer (SO_SNDBUF) to ``size`` bytes (at least 4 KiB)."""
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(size, 4096))


_UNSENT = termios.TIOCOUTQ  # on Linux the same request as SIOCOUTQ, for a TCP socket
_INT = struct.Struct("i")
_ZERO = bytes(_INT.size)


def kernel_unsent(fd: int) -> int:
    """Bytes in the kernel's send queue of socket ``fd``: not sent, or sent and not
    acknowledged by the peer. 0 where the system cannot say (not Linux, a closed socket)."""
    if fd < 0:
        return 0
    try:
        unsent: int = _INT.unpack(fcntl.ioctl(fd, _UNSENT, _ZERO))[0]
    except OSError:
        return 0
    return unsent
