"""/metrics: the Prometheus text format, with what the relay did counted."""

from __future__ import annotations

from typing import Any

from tests.support.app import MakeClient, parse_metrics, publish, publish_many, stream_opener


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
    assert after["progress_relay_publish_seconds_count"] == 4
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
