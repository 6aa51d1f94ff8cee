"""The relay's one middleware: what happens around every request's handler, in this order.

1. the connection's guard learns that a request is being handled (ops/connections.py);
2. it gets its id and is counted once answered (http/observe.py);
3. it is in flight until it ends, so a drain can wait for it (http/inflight.py);
4. every error below is answered in JSON (http/errors.py);
5. a browser's preflight is answered (http/cors.py);
6. credentials, the origin of a change and a body's type are checked (http/access.py), before
   its handler runs.

One coroutine frame for all of them, not one per part: an open stream holds every frame of the
chain around its handler as long as it is open (docs/performance.md, "Idle streams").
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from progress_relay.http.access import Access
from progress_relay.http.cors import Cors
from progress_relay.http.errors import answer_http_error, answer_relay_error
from progress_relay.http.inflight import InFlight
from progress_relay.http.observe import Observe
from progress_relay.ops.connections import Connections
from progress_relay.wire.errors import RelayError


def relay_middleware(
    guards: Connections, observe: Observe, in_flight: InFlight, cors: Cors, access: Access
) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = guards.request_started(request)
        token = observe.begin(request)
        started = time.perf_counter()
        status = 500  # what aiohttp answers to an exception that got past the JSON errors
        streamed = False
        in_flight.enter()
        try:
            try:
                response: web.StreamResponse | None = cors.preflight(request)
                if response is None:
                    await access.check(request)
                    response = await handler(request)
            except RelayError as exc:
                response = answer_relay_error(request, exc)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise  # a redirect goes out as aiohttp makes it
                response = answer_http_error(request, exc)
            status = response.status
            streamed = response.prepared  # its handler wrote the body: a stream
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except TimeoutError:
            status = 504  # as aiohttp answers it
            raise
        except asyncio.CancelledError:
            status, streamed = observe.cancelled(request, started)
            raise
        finally:
            in_flight.leave()
            observe.end(request, token, started, status, streamed=streamed)
            if guard is not None:
                guard.request_ended(request.content)

    return middleware
