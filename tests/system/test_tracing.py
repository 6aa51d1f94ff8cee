"""Tracing as the OTEL_* environment of a real `progress-relay serve` process says: the console
exporter, a real OTLP/HTTP receiver, nothing when nothing is set, and a relay without
OpenTelemetry installed."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.process import Relay, start_relay

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relays here get only the OTEL_* variables their test gives them."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def publish_and_stop(relay: Relay) -> str:
    """A publish (with a traceparent) and a stream open; then stop: the log."""
    try:
        with httpx.Client(base_url=relay.base_url, timeout=10) as http:
            published = http.post(
                "/v1/jobs/traced/events",
                json={"event": "progress", "data": {"percent": 5}},
                headers={"traceparent": TRACEPARENT},
            )
            assert published.status_code == 200, published.text
            with http.stream(
                "GET", "/v1/jobs/traced/stream", headers={"Last-Event-ID": "x-1"}
            ) as streamed:
                assert streamed.status_code == 200
        code, _, log = relay.stop()
        assert code == 0, log
        return log
    finally:
        relay.close()


def spans_printed(output: str) -> list[dict[str, Any]]:
    """The console exporter's spans: JSON objects one after another."""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    at = 0
    while (at := output.find("{", at)) != -1:
        span, at = decoder.raw_decode(output, at)
        spans.append(span)
    return spans


def test_the_console_exporter_prints_the_spans() -> None:
    relay = start_relay(env={"OTEL_TRACES_EXPORTER": "console"}, capture_stdout=True)
    log = publish_and_stop(relay)
    spans = {span["name"]: span for span in spans_printed(relay.output)}
    assert {"publish", "broker.publish", "stream.open", "broker.replays"} <= set(spans), spans
    publish = spans["publish"]
    assert publish["context"]["trace_id"] == "0x4bf92f3577b34da6a3ce929d0e0e4736"
    assert publish["parent_id"] == "0x00f067aa0ba902b7"
    assert publish["attributes"]["progress_relay.job_id"] == "traced"
    assert publish["resource"]["attributes"]["service.name"] == "progress-relay"
    assert spans["broker.publish"]["parent_id"] == publish["context"]["span_id"]
    assert spans["stream.open"]["attributes"]["progress_relay.outcome"] == "reset"
    assert "tracing: exporting spans with console" in log


def test_nothing_set_prints_nothing() -> None:
    relay = start_relay(capture_stdout=True)
    log = publish_and_stop(relay)
    assert relay.output == ""
    assert "tracing" not in log


def test_otel_sdk_disabled_wins() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}
    relay = start_relay(env=env, capture_stdout=True)
    publish_and_stop(relay)
    assert relay.output == ""


async def test_an_otlp_endpoint_alone_exports_over_http(aiohttp_server: Any) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME, nothing else: the spans reach a real
    OTLP/HTTP receiver (protobuf, decoded with the OTLP's own schema) when the relay stops."""
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        received.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    server = await aiohttp_server(app)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": str(server.make_url("/")).rstrip("/"),
        "OTEL_SERVICE_NAME": "uploads-relay",
    }
    relay = await asyncio.to_thread(start_relay, env=env)
    await asyncio.to_thread(publish_and_stop, relay)
    spans = [
        (resource.resource, span)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in spans}
    assert {"publish", "broker.publish", "stream.open", "broker.replays"} <= names, names
    for resource, _ in spans:
        attributes = {a.key: a.value.string_value for a in resource.attributes}
        assert attributes["service.name"] == "uploads-relay"
    publish = next(span for _, span in spans if span.name == "publish")
    assert publish.trace_id.hex() == TRACEPARENT.split("-")[1]


@pytest.fixture
def without_opentelemetry(tmp_path: Path) -> Iterator[str]:
    """A PYTHONPATH on which `opentelemetry` cannot be imported, as in an install without the
    `otel` extra (a regular package shadows the installed namespace package)."""
    package = tmp_path / "opentelemetry"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ImportError(\"No module named 'opentelemetry' (hidden by the test)\")\n"
    )
    yield str(tmp_path)


def test_without_opentelemetry_it_warns_once_and_runs(without_opentelemetry: str) -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "PYTHONPATH": without_opentelemetry}
    relay = start_relay(env=env, capture_stdout=True)
    log = publish_and_stop(relay)
    warnings = [line for line in log.splitlines() if "OpenTelemetry is not installed" in line]
    assert len(warnings) == 1, log
    assert "pip install 'progress-relay[otel]'" in warnings[0]
    assert relay.output == ""
