"""OpenTelemetry spans of a real relay app, exported to the SDK's in-memory exporter through a
real TracerProvider (ops/tracing.py), on both brokers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from progress_relay.http.app import create_app
from progress_relay.http.keys import HUB
from progress_relay.ops import tracing
from progress_relay.ops.tracing import Tracer
from tests.support.app import error_of, make_settings, publish, publish_many, stream_opener

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

Client = TestClient[Any, web.Application]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
async def traced(
    aiohttp_client: Any, broker: dict[str, Any], exporter: InMemorySpanExporter
) -> Client:
    """A relay whose spans go to ``exporter`` as each ends."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(make_settings(broker=broker), tracer=Tracer(provider))
    client: Client = await aiohttp_client(app)
    return client


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    spans = named(exporter, name)
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]


def child_of(exporter: InMemorySpanExporter, parent: ReadableSpan, name: str) -> ReadableSpan:
    assert parent.context is not None
    children = [
        span
        for span in named(exporter, name)
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]
    assert len(children) == 1, [(s.name, s.parent) for s in exporter.get_finished_spans()]
    assert children[0].context is not None
    assert children[0].context.trace_id == parent.context.trace_id
    return children[0]


def kind_of(broker: dict[str, Any]) -> str:
    return "memory" if broker["url"].startswith("memory") else "redis"


async def test_a_publish_is_a_span_with_the_broker_call_as_its_child(
    traced: Client, exporter: InMemorySpanExporter, broker: dict[str, Any]
) -> None:
    ids = await publish_many(
        traced, "t1", [("progress", {"percent": 10}), ("log", {"message": "m"})]
    )
    span = only(exporter, "publish")
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "progress_relay.job_id": "t1",
        "progress_relay.events": 2,
        "progress_relay.published": 2,
        "progress_relay.deduplicated": 0,
        "progress_relay.first_id": ids[0],
        "progress_relay.last_id": ids[1],
    }
    assert span.parent is None  # no traceparent: a trace of its own
    inner = child_of(exporter, span, "broker.publish")
    assert inner.attributes == {"progress_relay.broker": kind_of(broker)}


async def test_a_retried_publish_counts_what_was_deduplicated(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    body = {"events": [{"event": "log", "data": {"message": "m"}, "key": "k1"}]}
    first = await traced.post("/v1/jobs/t2/events", json=body)
    again = await traced.post("/v1/jobs/t2/events", json=body)
    assert first.status == again.status == 200
    assert (await first.json())["ids"] == (await again.json())["ids"]
    spans = named(exporter, "publish")
    assert [s.attributes and s.attributes["progress_relay.published"] for s in spans] == [1, 0]
    assert [s.attributes and s.attributes["progress_relay.deduplicated"] for s in spans] == [0, 1]


async def test_a_publish_with_a_traceparent_is_a_child_of_the_publishers_trace(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    response = await traced.post(
        "/v1/jobs/t3/events",
        json={"event": "progress", "data": {"percent": 5}},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=x"},
    )
    assert response.status == 200
    span = only(exporter, "publish")
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.context.trace_state.to_header() == "vendor=x"
    child_of(exporter, span, "broker.publish")


async def test_a_refused_publish_carries_its_status_and_code(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    await publish(traced, "t4", "complete")
    response = await traced.post(
        "/v1/jobs/t4/events", json={"event": "log", "data": {"message": "late"}}
    )
    await error_of(response, 409, "job_finished")
    refused = named(exporter, "publish")[-1]
    assert refused.attributes is not None
    assert refused.attributes["http.response.status_code"] == 409
    assert refused.attributes["error.type"] == "job_finished"
    assert "progress_relay.published" not in refused.attributes
    inner = child_of(exporter, refused, "broker.publish")
    assert inner.attributes is not None
    assert inner.attributes["http.response.status_code"] == 409


async def open_and_read(traced: Client, path: str, **kwargs: Any) -> int:
    """Open a stream and close it once its head is in; its status."""
    async with stream_opener(traced)(path, **kwargs) as (response, _):
        status: int = response.status
    return status


def open_decision(exporter: InMemorySpanExporter) -> dict[str, Any]:
    span = named(exporter, "stream.open")[-1]
    assert span.attributes is not None
    child_of(exporter, span, "broker.replays")
    return dict(span.attributes)


async def test_a_stream_open_that_replays_history(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    await publish_many(traced, "s1", [("progress", {"percent": 1}), ("progress", {"percent": 2})])
    assert await open_and_read(traced, "/v1/jobs/s1/stream") == 200
    assert open_decision(exporter) == {
        "progress_relay.jobs": 1,
        "progress_relay.job_ids": ("s1",),
        "progress_relay.replay_mode": "history",
        "progress_relay.last_event_id": "none",
        "progress_relay.outcome": "replay",
        "progress_relay.replayed": 2,
        "progress_relay.resets": 0,
    }


async def test_a_stream_open_with_a_current_id_replays_what_was_missed(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    ids = await publish_many(traced, "s2", [("log", {"message": "a"}), ("log", {"message": "b"})])
    headers = {"Last-Event-ID": ids[0]}
    assert await open_and_read(traced, "/v1/jobs/s2/stream", headers=headers) == 200
    decision = open_decision(exporter)
    assert decision["progress_relay.last_event_id"] == "current"
    assert decision["progress_relay.outcome"] == "replay"
    assert decision["progress_relay.replayed"] == 1


async def test_a_stream_open_with_a_foreign_id_is_a_reset(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    await publish(traced, "s3", "progress", {"percent": 50})
    headers = {"Last-Event-ID": "another-epoch-7"}
    assert await open_and_read(traced, "/v1/jobs/s3/stream", headers=headers) == 200
    decision = open_decision(exporter)
    assert decision["progress_relay.last_event_id"] == "foreign"
    assert decision["progress_relay.outcome"] == "reset"
    assert decision["progress_relay.resets"] == 1
    assert decision["progress_relay.replayed"] == 0


async def test_a_stream_open_past_the_end_is_204(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    done = await publish(traced, "s4", "complete")
    headers = {"Last-Event-ID": done}
    assert await open_and_read(traced, "/v1/jobs/s4/stream", headers=headers) == 204
    decision = open_decision(exporter)
    assert decision["progress_relay.last_event_id"] == "current"
    assert decision["progress_relay.outcome"] == "no_content"
    assert decision["progress_relay.replayed"] == decision["progress_relay.resets"] == 0


async def test_a_stream_open_before_the_first_event_waits(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    path = "/v1/stream?job=w1&job=w2&replay=none"
    assert await open_and_read(traced, path) == 200
    decision = open_decision(exporter)
    assert decision["progress_relay.jobs"] == 2
    assert decision["progress_relay.job_ids"] == ("w1", "w2")
    assert decision["progress_relay.replay_mode"] == "none"
    assert decision["progress_relay.outcome"] == "wait"


async def test_a_multi_job_stream_names_a_bounded_number_of_ids(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    path = "/v1/stream?" + "&".join(f"job=m{n}" for n in range(40))
    assert await open_and_read(traced, path) == 200
    decision = open_decision(exporter)
    assert decision["progress_relay.jobs"] == 40
    assert decision["progress_relay.job_ids"] == tuple(f"m{n}" for n in range(16))


async def test_create_cancel_and_delete_are_spans(
    traced: Client, exporter: InMemorySpanExporter
) -> None:
    assert (await traced.post("/v1/jobs", json={"id": "c1"})).status == 201
    await publish(traced, "c1", "progress", {"percent": 1})
    assert (await traced.post("/v1/jobs/c1/cancel")).status == 202
    assert (await traced.delete("/v1/jobs/c1")).status == 204
    await error_of(await traced.delete("/v1/jobs/c1"), 404, "job_not_found")
    for name in ("create", "cancel"):
        assert only(exporter, name).attributes == {"progress_relay.job_id": "c1"}
    deletes = named(exporter, "delete")
    assert [s.attributes and s.attributes.get("http.response.status_code") for s in deletes] == [
        None,
        404,
    ]


async def test_off_unless_the_environment_asks(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    app = create_app(make_settings())
    assert app[HUB].tracer is None
    middlewares = list(app.middlewares)
    client: Client = await aiohttp_client(app)
    await publish(client, "off", "progress", {"percent": 1})
    assert app[HUB].tracer is None
    assert len(app.middlewares) == len(middlewares)  # no trace-context middleware


@pytest.mark.memory_only
def test_the_untraced_relay_never_imports_opentelemetry(tmp_path: Any) -> None:
    """A publish and a stream open in a fresh interpreter, tracing off: OpenTelemetry is not
    even imported, so the hot path cannot call into it."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from aiohttp.test_utils import TestClient, TestServer
        from progress_relay.config import Settings
        from progress_relay.http.app import create_app

        async def main():
            async with TestClient(TestServer(create_app(Settings()))) as client:
                body = {"event": "progress", "data": {"percent": 3}}
                published = await client.post("/v1/jobs/x/events", json=body)
                streamed = await client.get("/v1/jobs/x/stream")
                streamed.close()
                return published.status, streamed.status

        statuses = asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print(json.dumps({"statuses": statuses, "loaded": loaded}))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"statuses": [200, 200], "loaded": []}


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "relay"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": " None "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
@pytest.mark.memory_only
def test_which_environment_turns_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, ["otlp_proto_http"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp_proto_http"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp_proto_http", "console"]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            ["otlp_proto_grpc"],
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            ["otlp_proto_http"],
        ),
    ],
)
@pytest.mark.memory_only
def test_which_exporters_the_environment_selects(environ: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(environ) == names


@pytest.mark.memory_only
def test_an_exporter_that_is_not_installed_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "zipkin"}
    with caplog.at_level("WARNING", logger="progress_relay.ops.tracing"):
        assert tracing.from_environment(environ) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("'zipkin' is installed" in m for m in messages), messages


@pytest.mark.memory_only
def test_the_environments_tracer_names_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SERVICE_NAME unset: `progress-relay`; set: it wins."""

    def service(environ: dict[str, str]) -> Any:
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        tracer = tracing.from_environment()
        assert tracer is not None
        try:
            return tracer.provider.resource.attributes["service.name"]
        finally:
            tracer.shutdown()

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service({"OTEL_TRACES_EXPORTER": "console"}) == "progress-relay"
    assert service({"OTEL_SERVICE_NAME": "uploads-relay"}) == "uploads-relay"


async def test_a_cross_job_publish_is_a_span_with_the_broker_call_as_its_child(
    traced: Client, exporter: InMemorySpanExporter, broker: dict[str, Any]
) -> None:
    events = [
        {"job": "x1", "event": "log", "data": {"message": "a"}},
        {"job": "x2", "event": "log", "data": {"message": "b"}},
        {"job": "x1", "event": "log", "data": {"message": "c"}},
    ]
    assert (await traced.post("/v1/events", json={"events": events})).status == 200
    span = only(exporter, "publish_many")
    assert span.attributes is not None
    assert dict(span.attributes) == {"progress_relay.jobs": 2, "progress_relay.events": 3}
    inner = child_of(exporter, span, "broker.publish_many")
    assert inner.attributes == {"progress_relay.broker": kind_of(broker)}
