"""/metrics: the Prometheus text format, with what the relay did counted."""

from __future__ import annotations

import asyncio
import platform
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from progress_relay import __version__
from tests.support.app import MakeClient, parse_metrics, publish, publish_many, stream_opener

EVENTS = "/v1/jobs/{job_id}/events"
STREAM = "/v1/jobs/{job_id}/stream"
LOG = {"event": "log", "data": {"message": "x"}}


async def scrape(client: Any) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return parse_metrics(await response.text())


async def test_metrics_count_what_happened(make_client: MakeClient) -> None:
    client = await make_client(jobs={"ring_events": 3})
    open_stream = stream_opener(client)
    before = await scrape(client)
    assert before["progress_relay_events_published_total"] == 0
    assert before["progress_relay_open_streams"] == 0
    assert before["process_resident_memory_bytes"] > 0

    first = await publish(client, "m1", "progress", {"percent": 1})
    logs = await publish_many(client, "m1", [("log", {"message": str(i)}) for i in range(4)])
    await client.post("/v1/jobs", json={"id": "m2"})
    async with open_stream("/v1/jobs/m1/stream", headers={"Last-Event-ID": first}) as (_, reader):
        [reset] = await reader.events(1)  # the ring of 3 no longer holds what followed `first`
        assert reset.event == "reset"
        during = await scrape(client)
        assert during["progress_relay_open_streams"] == 1
    async with open_stream("/v1/jobs/m1/stream", headers={"Last-Event-ID": logs[-2]}) as (_, r):
        [replayed] = await r.events(1)
        assert replayed.id == logs[-1]
    body = {"event": "complete", "key": "the-end"}
    done = (await (await client.post("/v1/jobs/m1/events", json=body)).json())["ids"][0]
    retried = await client.post("/v1/jobs/m1/events", json=body)  # a retry: deduplicated
    assert (await retried.json())["ids"] == [done]
    async with open_stream("/v1/jobs/m1/stream", headers={"Last-Event-ID": done}) as (r, _):
        assert r.status == 204
    async with open_stream("/v1/jobs/m1/stream") as (_, reader):
        frames = await reader.until_end()
        assert frames[0].event == "reset"  # history starts after the first events: a reset

    after = await scrape(client)
    assert after["progress_relay_events_published_total"] == 6
    assert after["progress_relay_events_deduplicated_total"] == 1
    assert after["progress_relay_resets_total"] == 2
    assert after["progress_relay_no_content_total"] == 1
    assert after["progress_relay_events_replayed_total"] == 1
    assert after["progress_relay_frames_delivered_total"] >= 4  # retry, reset, replayed events
    assert after["progress_relay_stream_writes_total"] >= 2
    assert after["progress_relay_publish_duration_seconds_count"] == 4
    assert after["progress_relay_jobs{status=completed}"] == 1
    assert after["progress_relay_jobs{status=pending}"] == 1
    assert after["progress_relay_jobs{status=running}"] == 0
    assert after["progress_relay_broker_errors_total"] == 0
    assert after["progress_relay_subscribers_dropped_total"] == 0
    assert after["progress_relay_frames_conflated_total"] == 0


async def test_each_relay_has_its_own_registry(make_client: MakeClient) -> None:
    one = await make_client(broker={"url": "memory://"})
    two = await make_client(broker={"url": "memory://"})
    await publish(one, "a", "log", {"message": "x"})
    assert (await scrape(one))["progress_relay_events_published_total"] == 1
    assert (await scrape(two))["progress_relay_events_published_total"] == 0


def requests(metrics: dict[str, float], method: str, route: str, status: int) -> float:
    return metrics.get(
        f"progress_relay_http_requests_total{{method={method},route={route},status={status}}}", 0
    )


async def test_http_requests_by_route_template_and_status(make_client: MakeClient) -> None:
    client = await make_client(auth={"publish_tokens": ["t0k"]})
    bearer = {"Authorization": "Bearer t0k"}
    for job in ("job-a", "job-b"):
        ok = await client.post(f"/v1/jobs/{job}/events", json=LOG, headers=bearer)
        assert ok.status == 200
    assert (await client.get("/v1/nothing/here")).status == 404
    assert (await client.post("/v1/jobs/job-a/events", json=LOG)).status == 401
    assert (await client.request("PROPFIND", "/healthz")).status == 405
    first = await scrape(client)
    assert requests(first, "POST", EVENTS, 200) == 2
    assert requests(first, "POST", EVENTS, 401) == 1
    assert requests(first, "GET", "unmatched", 404) == 1
    assert requests(first, "other", "unmatched", 405) == 1
    assert requests(first, "GET", "/metrics", 200) == 0  # a scrape is counted once it answered
    histogram = "progress_relay_http_request_duration_seconds"
    assert first[f"{histogram}_count{{method=POST,route={EVENTS}}}"] == 3
    assert first[f"{histogram}_bucket{{le=+Inf,method=POST,route={EVENTS}}}"] == 3
    assert first[f"{histogram}_bucket{{le=0.0005,method=POST,route={EVENTS}}}"] <= 3
    assert first[f"{histogram}_bucket{{le=10.0,method=POST,route={EVENTS}}}"] == 3
    assert first[f"{histogram}_count{{method=GET,route=unmatched}}"] == 1
    second = await scrape(client)
    assert requests(second, "GET", "/metrics", 200) == 1
    # Cardinality bounded: no job id, no raw path in any label.
    for name in second:
        assert "job-a" not in name and "job-b" not in name and "nothing" not in name, name


async def test_streams_are_counted_when_they_end_and_timed_apart(make_client: MakeClient) -> None:
    client = await make_client()
    open_stream = stream_opener(client)
    async with open_stream("/v1/jobs/s1/stream") as (response, reader):
        assert response.status == 200
        await publish(client, "s1", "complete")
        await reader.until_end()  # the server ended it
    async with open_stream("/v1/jobs/s2/stream") as (response, reader):
        await reader.next()
        during = await scrape(client)
        assert requests(during, "GET", STREAM, 200) == 1  # the open one is not counted yet
    metrics = during
    for _ in range(200):  # the client closed it: counted once the relay has seen it go
        metrics = await scrape(client)
        if requests(metrics, "GET", STREAM, 200) == 2:
            break
        await asyncio.sleep(0.01)
    assert requests(metrics, "GET", STREAM, 200) == 2
    assert metrics["progress_relay_stream_duration_seconds_count{route=" + STREAM + "}"] == 2
    duration = "progress_relay_http_request_duration_seconds_count"
    assert f"{duration}{{method=GET,route={STREAM}}}" not in metrics  # long, kept apart
    assert metrics[f"{duration}{{method=POST,route={EVENTS}}}"] == 1


async def test_build_info(make_client: MakeClient, broker: dict[str, Any]) -> None:
    metrics = await scrape(await make_client())
    kind = broker["url"].split(":")[0]
    labels = f"broker={kind},python={platform.python_version()},version={__version__}"
    assert metrics[f"progress_relay_build_info{{{labels}}}"] == 1
    assert len([name for name in metrics if name.startswith("progress_relay_build_info")]) == 1


async def test_openmetrics_when_asked(make_client: MakeClient) -> None:
    client = await make_client()
    await publish(client, "om", "log", {"message": "x"})
    asked = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert asked.status == 200
    assert asked.headers["Content-Type"] == (
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    text = await asked.text()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["progress_relay_events_published"].samples[0].value == 1
    assert families["progress_relay_publish_duration_seconds"].type == "histogram"
    # Prometheus' own Accept header prefers OpenMetrics too.
    prometheus = (
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
    )
    preferred = await client.get("/metrics", headers={"Accept": prometheus})
    assert preferred.headers["Content-Type"].startswith("application/openmetrics-text;")
    assert (await preferred.text()).endswith("# EOF\n")
    plain = await client.get("/metrics", headers={"Accept": "text/plain"})
    assert plain.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    assert "# EOF" not in await plain.text()


async def test_metric_names_follow_the_conventions(make_client: MakeClient) -> None:
    client = await make_client()
    await publish(client, "n", "log", {"message": "x"})
    text = await (await client.get("/metrics")).text()
    assert "progress_relay_publish_seconds" not in text  # renamed in this version
    assert "progress_relay_publish_duration_seconds_count 1.0" in text
    for family in text_string_to_metric_families(
        await (
            await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        ).text()
    ):
        if family.type == "counter":
            assert not family.name.endswith("_total"), family.name  # the exposition adds it
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
