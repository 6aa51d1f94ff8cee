"""OpenTelemetry traces, when the standard OTEL_* environment asks for them (docs/operations.md,
"Tracing").

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (not ``none``), or, with it unset,
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; never with
``OTEL_SDK_DISABLED=true``. The SDK reads the rest itself (the exporter's endpoint, headers and
timeout, the batch processor's ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``, ``OTEL_PROPAGATORS``,
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``).

OpenTelemetry is the optional ``otel`` extra: it is imported only when tracing is on, and when it
is asked for but not installed the relay says so once and runs without traces. Off, nothing here
runs per request: the Hub's ``tracer`` is None (it checks that and nothing else) and no
middleware is installed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from progress_relay.http.keys import HUB
from progress_relay.wire.errors import RelayError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

T = TypeVar("T")
Attributes = Mapping[str, str | bool | int | float | Sequence[str] | Sequence[int]]

# Attribute names (the relay's own under `progress_relay.`; the HTTP status as in the semantic
# conventions).
JOB_ID = "progress_relay.job_id"
STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"

# What OTEL_TRACES_EXPORTER=otlp means, by OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: the entry point
# names of the exporters' packages. The `otel` extra installs the HTTP one; the specification's
# default protocol is http/protobuf.
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_EXPORTERS = "opentelemetry_traces_exporter"  # the SDK's entry point group for span exporters
_SERVICE = "progress-relay"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters' entry point names that the environment selects."""
    names = [
        name.strip()
        for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if name.strip() and name.strip().lower() != "none"
    ]
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    return [
        _OTLP_BY_PROTOCOL.get(protocol, f"otlp ({protocol})") if name == "otlp" else name
        for name in names
    ]


def from_environment(environ: Mapping[str, str] | None = None) -> Tracer | None:
    """The relay's tracer as the OTEL_* environment says, or None: off (or not possible, said
    once in the log)."""
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError as exc:
        log.warning(
            "tracing is asked for by OTEL_* variables, but OpenTelemetry is not installed "
            "(pip install 'progress-relay[otel]'): running without traces (%s)",
            exc,
        )
        return None
    exporters: list[SpanExporter] = []
    for name in exporter_names(environ):
        found = importlib.metadata.entry_points(group=_EXPORTERS, name=name)
        if not found:
            log.warning("tracing: no span exporter %r is installed; it is left out", name)
            continue
        exporter = next(iter(found)).load()()  # it reads its endpoint, headers... itself
        exporters.append(exporter)
    if not exporters:
        log.warning("tracing: none of the exporters asked for is installed: no traces")
        return None
    # OTEL_SERVICE_NAME or a service.name in OTEL_RESOURCE_ATTRIBUTES wins; else the relay's name
    resource = Resource.create({"service.version": importlib.metadata.version(_SERVICE)})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _SERVICE}))
    provider = TracerProvider(resource=resource)  # reads OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # reads OTEL_BSP_*
    log.info("tracing: exporting spans with %s", ", ".join(exporter_names(environ)))
    return Tracer(provider)


class Tracer:
    """The relay's spans, on a TracerProvider of the SDK (the environment's, or a test's), not
    the global one: the relay is then traced alike however it was started."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, propagate, trace

        self.provider = provider
        self._tracer = provider.get_tracer("progress_relay", importlib.metadata.version(_SERVICE))
        self._context = context
        self._propagate = propagate
        self._trace = trace

    @contextmanager
    def span(self, name: str, attributes: Attributes) -> Iterator[Span]:
        """A span, current within the block (so the spans opened in it are its children). An
        error of the relay puts its HTTP status and code on it; a 5xx, or any other exception,
        marks it failed."""
        from opentelemetry.trace import StatusCode

        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except RelayError as exc:
                span.set_attribute(STATUS, exc.status)
                span.set_attribute(ERROR_TYPE, exc.code)
                if exc.status >= 500:
                    span.set_status(StatusCode.ERROR, str(exc))
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
                span.set_status(StatusCode.ERROR, str(exc))
                raise

    async def around(self, name: str, attributes: Attributes, call: Awaitable[T]) -> T:
        """Await ``call`` in a span."""
        with self.span(name, attributes):
            return await call

    def annotate(self, attributes: Attributes) -> None:
        """Add attributes to the current span (what was decided, once it is known)."""
        self._trace.get_current_span().set_attributes(attributes)

    @web.middleware
    async def trace_context(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The caller's trace context (``traceparent``/``tracestate``, or what OTEL_PROPAGATORS
        names) is the parent of the request's spans."""
        token = self._context.attach(self._propagate.extract(request.headers))
        try:
            return await handler(request)
        finally:
            self._context.detach(token)

    def shutdown(self) -> None:
        """Export what is pending and stop."""
        self.provider.shutdown()


def setup(app: web.Application, tracer: Tracer | None) -> None:
    """Trace the app's requests with ``tracer`` (None: no tracing, and nothing installed)."""
    if tracer is None:
        return
    app[HUB].tracer = tracer
    app.middlewares.append(tracer.trace_context)

    async def shut(app: web.Application) -> None:
        await asyncio.to_thread(tracer.shutdown)  # exporting what is pending can take a while

    app.on_cleanup.append(shut)
