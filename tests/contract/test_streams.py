"""Resume semantics of the per-job stream: exact replay, reset, 204, replay modes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import MakeClient, publish, publish_many, stream_opener


async def test_last_event_id_header_gets_exactly_the_missed_events(client, open_stream) -> None:
    ids = await publish_many(client, "j", [("progress", {"percent": p}) for p in (1, 2, 3)])
    async with open_stream("/v1/jobs/j/stream") as (_, reader):
        seen = await reader.events(3)
    assert [f.id for f in seen] == ids
    missed = await publish_many(client, "j", [("log", {"message": f"m{i}"}) for i in range(4)])
    async with open_stream("/v1/jobs/j/stream", headers={"Last-Event-ID": ids[1]}) as (_, reader):
        frames = await reader.events(5)
        live = await publish(client, "j", "progress", {"percent": 9})
        [last] = await reader.events(1)
    assert [f.id for f in frames] == [ids[2], *missed]
    assert last.id == live


async def test_query_last_event_id_resumes_and_the_header_wins(client, open_stream) -> None:
    ids = await publish_many(client, "q", [("progress", {"percent": p}) for p in range(5)])
    async with open_stream(f"/v1/jobs/q/stream?last_event_id={ids[2]}") as (_, reader):
        assert [f.id for f in await reader.events(2)] == ids[3:]
    path = f"/v1/jobs/q/stream?last_event_id={ids[0]}"
    async with open_stream(path, headers={"Last-Event-ID": ids[3]}) as (_, reader):
        assert [f.id for f in await reader.events(1)] == ids[4:]


async def test_an_id_older_than_the_ring_gets_one_reset_then_live(make_client: MakeClient) -> None:
    client = await make_client(jobs={"ring_events": 5})
    ids = await publish_many(client, "r", [("progress", {"percent": p}) for p in range(10)])
    async with stream_opener(client)("/v1/jobs/r/stream", headers={"Last-Event-ID": ids[1]}) as (
        _,
        reader,
    ):
        [reset] = await reader.events(1)
        assert reset.event == "reset"
        assert reset.id == ids[-1]  # the position the snapshot reflects
        snapshot = reset.json
        assert (snapshot["id"], snapshot["percent"], snapshot["status"]) == ("r", 9, "running")
        assert snapshot["last_event_id"] == ids[-1]
        live = await publish(client, "r", "progress", {"percent": 50})
        [frame] = await reader.events(1)
        assert (frame.event, frame.id) == ("progress", live)
    # The reset's id is a position: resuming from it is exact.
    async with stream_opener(client)("/v1/jobs/r/stream", headers={"Last-Event-ID": reset.id}) as (
        _,
        reader,
    ):
        assert [f.id for f in await reader.events(1)] == [live]


@pytest.mark.memory_only  # instances on one Redis share an epoch; see test_redis_failures
async def test_an_id_from_a_previous_process_gets_reset(make_client: MakeClient) -> None:
    before = await make_client()  # another life of the relay: another epoch
    old_id = await publish(before, "p", "progress", {"percent": 30})
    after = await make_client()
    await publish(after, "p", "progress", {"percent": 60})
    async with stream_opener(after)("/v1/jobs/p/stream", headers={"Last-Event-ID": old_id}) as (
        _,
        reader,
    ):
        [reset] = await reader.events(1)
    assert reset.event == "reset"
    assert reset.json["percent"] == 60


@pytest.mark.memory_only  # instances on one Redis share an epoch
async def test_a_previous_process_id_for_a_job_not_yet_republished_waits(
    make_client: MakeClient,
) -> None:
    before = await make_client()
    old_id = await publish(before, "w", "progress", {"percent": 30})
    after = await make_client()
    async with stream_opener(after)("/v1/jobs/w/stream", headers={"Last-Event-ID": old_id}) as (
        response,
        reader,
    ):
        assert response.status == 200
        [reset] = await reader.events(1)
        assert (reset.event, reset.id, reset.json["status"]) == ("reset", None, "pending")
        # The worker goes on publishing to the restarted relay: the stream picks it up.
        live = await publish(after, "w", "progress", {"percent": 40})
        [frame] = await reader.events(1)
        assert frame.id == live


async def test_malformed_or_injected_ids_get_reset_and_inject_nothing(client, open_stream) -> None:
    await publish(client, "m", "progress", {"percent": 1})
    for bad in ("nonsense", "x-1\r\nevent: complete", "-1", "abc-"):
        async with open_stream("/v1/jobs/m/stream", params={"last_event_id": bad}) as (
            response,
            reader,
        ):
            assert response.status == 200
            retry = await reader.next_raw()
            assert retry == b"retry: 3000\n\n"
            [reset] = await reader.events(1)
            assert reset.event == "reset"
            assert b"complete" not in reset.raw


async def test_terminal_event_ends_the_stream_and_a_reconnect_past_it_gets_204(
    client, open_stream
) -> None:
    first = await publish(client, "t", "progress", {"percent": 50})
    async with open_stream("/v1/jobs/t/stream", headers={"Last-Event-ID": first}) as (_, reader):
        done = await publish(client, "t", "complete", {"result": "ok"})
        assert [f.id for f in await reader.until_end()] == [done]
    response = await client.get("/v1/jobs/t/stream", headers={"Last-Event-ID": done})
    assert response.status == 204
    # An earlier id still gets what it missed, the terminal event last, then the end.
    async with open_stream("/v1/jobs/t/stream", headers={"Last-Event-ID": first}) as (_, reader):
        assert [f.event for f in await reader.until_end()] == ["complete"]


async def test_gone_job_with_an_id_of_this_relay_gets_204(client) -> None:
    last = await publish(client, "gone", "progress", {"percent": 5})
    assert (await client.delete("/v1/jobs/gone")).status == 204
    response = await client.get("/v1/jobs/gone/stream", headers={"Last-Event-ID": last})
    assert response.status == 204


async def test_replay_modes(client, open_stream) -> None:
    ids = await publish_many(
        client, "rm", [("progress", {"percent": 10}), ("log", {"message": "a"})]
    )
    async with open_stream("/v1/jobs/rm/stream?replay=history") as (_, reader):
        assert [f.id for f in await reader.events(2)] == ids
    async with open_stream("/v1/jobs/rm/stream?replay=snapshot") as (_, reader):
        [reset] = await reader.events(1)
        assert (reset.event, reset.id, reset.json["percent"]) == ("reset", ids[-1], 10)
        assert reset.json["logs"][0]["message"] == "a"
    async with open_stream("/v1/jobs/rm/stream?replay=none") as (_, reader):
        live = await publish(client, "rm", "progress", {"percent": 20})
        [frame] = await reader.events(1)
        assert frame.id == live  # nothing of the past, only what came after
    bad = await client.get("/v1/jobs/rm/stream?replay=everything")
    assert bad.status == 400
    assert (await bad.json())["error"]["code"] == "invalid_parameter"


async def test_replay_history_without_the_first_event_sends_reset(make_client: MakeClient) -> None:
    client = await make_client(jobs={"ring_events": 3})
    await publish_many(client, "h", [("progress", {"percent": p}) for p in range(6)])
    async with stream_opener(client)("/v1/jobs/h/stream") as (_, reader):
        [reset] = await reader.events(1)
    assert (reset.event, reset.json["percent"]) == ("reset", 5)


async def test_finished_job_replay_modes(client, open_stream) -> None:
    ids = await publish_many(
        client, "f", [("progress", {"percent": 1}), ("failed", {"message": "x"})]
    )
    async with open_stream("/v1/jobs/f/stream") as (_, reader):
        assert [f.id for f in await reader.until_end()] == ids
    async with open_stream("/v1/jobs/f/stream?replay=snapshot") as (_, reader):
        [reset] = await reader.until_end()
        assert (reset.id, reset.json["status"]) == (ids[-1], "failed")
    assert (await client.get("/v1/jobs/f/stream?replay=none")).status == 204


async def test_subscribe_before_the_first_publish_waits(client, open_stream) -> None:
    async with open_stream("/v1/jobs/later/stream") as (response, reader):
        assert response.status == 200
        assert (await reader.next()).retry == 3000
        first = await publish(client, "later", "progress", {"percent": 1})
        [frame] = await reader.events(1)
    assert frame.id == first


async def test_stream_headers(client, open_stream) -> None:
    async with open_stream("/v1/jobs/h1/stream", headers={"Accept-Encoding": "gzip"}) as (
        response,
        _,
    ):
        headers: Any = response.headers
        assert headers["Content-Type"] == "text/event-stream"
        assert headers["Cache-Control"] == "no-cache, no-transform"
        assert headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in headers


async def test_bad_job_id_in_stream_path_is_400(client) -> None:
    for bad in ("-x", "a" * 129, "a%0Ab", "a%0D%0Aevent:%20x"):
        response = await client.get(f"/v1/jobs/{bad}/stream")
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == "invalid_job_id"


@pytest.mark.parametrize("path", ["/v1/jobs/h/stream", "/v1/stream?job=h"])
async def test_head_on_a_stream_is_405_whatever_the_job(client, path: str) -> None:
    """A stream has no headers-only form. HEAD used to run the handler: 204 for a job seen to its
    end, 405 otherwise, a subscriber opened and dropped each time, and a route that claimed HEAD."""
    last = await publish(client, "h", "complete", {})
    for headers in ({}, {"Last-Event-ID": last}):
        response = await client.head(path, headers=headers)
        assert (response.status, response.headers["Allow"]) == (405, "GET")
    other_method = await client.put(path)
    assert (other_method.status, other_method.headers["Allow"]) == (405, "GET")
