"""Idempotency keys: a publish retried with the same `key` gets its original id back and the
event is not published twice, on both brokers, alone, in batches, concurrently and after the
job has finished; the window and the per-job bound forget keys as configured."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from progress_relay.http.app import create_app
from progress_relay.wire.ids import parse_event_id
from tests.support.app import MakeClient, error_of, make_settings
from tests.support.properties import PROPERTY, on_loop


async def post(client: Any, job_id: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await client.post(f"/v1/jobs/{job_id}/events", json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def history(client: Any, job_id: str) -> list[tuple[str, str, Any]]:
    response = await client.get(f"/v1/jobs/{job_id}/events?limit=1000")
    assert response.status == 200, await response.text()
    return [(e["id"], e["event"], e["data"]) for e in (await response.json())["events"]]


def log(message: str, key: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "log", "data": {"message": message}}
    if key is not None:
        event["key"] = key
    return event


async def test_a_repeated_key_returns_the_original_id_and_publishes_once(client) -> None:
    first = await post(client, "j", log("once", "k1"))
    again = await post(client, "j", log("once", "k1"))
    assert again["ids"] == first["ids"]
    assert await history(client, "j") == [(first["ids"][0], "log", {"message": "once"})]


async def test_events_without_a_key_are_never_deduplicated(client) -> None:
    await post(client, "j", log("same"))
    await post(client, "j", log("same"))
    assert [data for _, _, data in await history(client, "j")] == [{"message": "same"}] * 2


async def test_a_batch_publishes_only_its_new_keys_and_keeps_the_order_of_ids(client) -> None:
    first = await post(client, "j", {"events": [log("a", "ka"), log("b", "kb")]})
    mixed = await post(
        client, "j", {"events": [log("a", "ka"), log("c", "kc"), log("b", "kb"), log("d")]}
    )
    ids = mixed["ids"]
    assert ids[0] == first["ids"][0] and ids[2] == first["ids"][1]
    new = [parse_event_id(ids[1]), parse_event_id(ids[3])]
    assert new[0] is not None and new[1] is not None
    assert new[0].seq < new[1].seq
    assert [(i, data["message"]) for i, _, data in await history(client, "j")] == [
        (first["ids"][0], "a"),
        (first["ids"][1], "b"),
        (ids[1], "c"),
        (ids[3], "d"),
    ]


async def test_a_retried_terminal_event_succeeds_after_the_job_finished(client) -> None:
    await post(client, "j", {"event": "progress", "data": {"percent": 50}, "key": "p"})
    done = await post(client, "j", {"event": "complete", "data": {"result": 1}, "key": "end"})
    retried = await post(client, "j", {"event": "complete", "data": {"result": 1}, "key": "end"})
    assert retried == done
    response = await client.post("/v1/jobs/j/events", json=log("late", "new"))
    await error_of(response, 409, "job_finished")
    # A batch that mixes a seen key with a new one after the end publishes nothing.
    response = await client.post("/v1/jobs/j/events", json={"events": [log("x", "p"), log("y")]})
    await error_of(response, 409, "job_finished")
    assert [name for _, name, _ in await history(client, "j")] == ["progress", "complete"]


async def test_concurrent_retries_of_one_key_publish_it_once(client) -> None:
    answers = await asyncio.gather(*(post(client, "j", log("race", "same")) for _ in range(20)))
    assert len({tuple(answer["ids"]) for answer in answers}) == 1
    assert len(await history(client, "j")) == 1


async def test_keys_belong_to_their_job(client) -> None:
    one = await post(client, "one", log("x", "k"))
    two = await post(client, "two", log("x", "k"))
    assert one["ids"] != two["ids"]
    assert len(await history(client, "two")) == 1


async def test_a_duplicate_answer_carries_cancel_requested(client) -> None:
    first = await post(client, "j", log("x", "k"))
    assert first["cancel_requested"] is False
    assert (await client.post("/v1/jobs/j/cancel")).status == 202
    again = await post(client, "j", log("x", "k"))
    assert again == {"ids": first["ids"], "cancel_requested": True}


async def test_bad_keys_are_refused_and_nothing_is_published(client) -> None:
    cases = [
        ({"event": "log", "data": {"message": "m"}, "key": ""}, "$.key"),
        ({"event": "log", "data": {"message": "m"}, "key": "k" * 201}, "$.key"),
        ({"event": "log", "data": {"message": "m"}, "key": 7}, "$.key"),
        ({"event": "log", "data": {"message": "m"}, "key": None}, "$.key"),
        ({"events": [{"event": "log", "data": {"message": "m"}, "key": None}]}, "$.events[0].key"),
        ({"events": [log("a", "dup"), log("b", "dup")]}, "$.events[1].key"),
        ({"events": [log("a")], "key": "k"}, "not both"),
    ]
    for body, named in cases:
        response = await client.post("/v1/jobs/j/events", json=body)
        assert named in await error_of(response, 422, "invalid_event"), body
    assert (await client.get("/v1/jobs/j")).status == 404


async def test_keys_are_forgotten_after_the_window(make_client: MakeClient) -> None:
    client = await make_client(jobs={"idempotency_window": 0.3})
    first = await post(client, "j", log("x", "k"))
    assert (await post(client, "j", log("x", "k")))["ids"] == first["ids"]
    await asyncio.sleep(0.5)
    later = await post(client, "j", log("x", "k"))
    assert later["ids"] != first["ids"]
    assert len(await history(client, "j")) == 2


async def test_each_job_keeps_at_most_its_newest_keys(make_client: MakeClient) -> None:
    client = await make_client(jobs={"idempotency_keys": 3})
    ids = [(await post(client, "j", log(f"m{i}", f"k{i}")))["ids"][0] for i in range(4)]
    # k0 was pushed out by k3; k1..k3 are still known.
    assert [(await post(client, "j", log("r", f"k{i}")))["ids"][0] for i in (1, 2, 3)] == ids[1:]
    assert (await post(client, "j", log("m0", "k0")))["ids"][0] not in ids
    assert len(await history(client, "j")) == 5


async def test_a_retry_through_another_instance_returns_the_original_id(
    aiohttp_client: Any, redis_server: Any
) -> None:
    """Instances of one deployment share the keys, as they share history."""
    broker = {"url": redis_server.url, "key_prefix": "idem-instances:"}
    a = await aiohttp_client(create_app(make_settings(broker=broker)))
    b = await aiohttp_client(create_app(make_settings(broker=broker)))
    first = await post(a, "j", {"events": [log("a", "ka"), log("b", "kb")]})
    retried = await post(b, "j", {"events": [log("a", "ka"), log("b", "kb")]})
    assert retried["ids"] == first["ids"]
    assert len(await history(b, "j")) == 2


# --- Any sequence of publishes and retries ---------------------------------------------------

BATCHES = st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6)


@st.composite
def retry_programs(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, list[int], int]], bool]:
    """Batch sizes; then retries, each (batch, which of its events in which order, instance);
    and whether the last batch ends the job."""
    sizes = draw(BATCHES)
    retries = []
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        batch = draw(st.integers(min_value=0, max_value=len(sizes) - 1))
        events = draw(st.permutations(range(sizes[batch])))
        subset = events[: draw(st.integers(min_value=1, max_value=sizes[batch]))]
        retries.append((batch, list(subset), draw(st.integers(min_value=0, max_value=1))))
    return sizes, retries, draw(st.booleans())


async def _run_retries(
    clients: list[Any], program: tuple[list[int], list[tuple[int, list[int], int]], bool]
) -> None:
    sizes, raw_retries, ends = program
    last = len(sizes) - 1
    # A terminal event can only be last in a batch, so a retry of the last batch keeps its order.
    retries = [
        (b, sorted(order) if ends and b == last else order, inst) for b, order, inst in raw_retries
    ]
    job = f"p{uuid.uuid4().hex[:10]}"
    batches = [
        [log(f"b{b}e{e}", f"{job}-{b}-{e}") for e in range(size)] for b, size in enumerate(sizes)
    ]
    if ends:
        batches[-1][-1] = {"event": "complete", "data": {}, "key": f"{job}-end"}
    original: dict[str, str] = {}
    for index, batch in enumerate(batches):
        # Each batch goes out together with the retries of the batches before it.
        before = [r for r in retries if r[0] < index and (r[0] + index) % 2 == 0]
        sends = [post(clients[index % len(clients)], job, {"events": batch})]
        sends += [
            post(clients[inst % len(clients)], job, {"events": [batches[b][e] for e in order]})
            for b, order, inst in before
        ]
        answers = await asyncio.gather(*sends)
        for event, event_id in zip(batch, answers[0]["ids"], strict=True):
            original[event["key"]] = event_id
        for (b, order, _), answer in zip(before, answers[1:], strict=True):
            assert answer["ids"] == [original[batches[b][e]["key"]] for e in order]
    for b, order, inst in retries:  # every retry again, after the end too
        answer = await post(
            clients[inst % len(clients)], job, {"events": [batches[b][e] for e in order]}
        )
        assert answer["ids"] == [original[batches[b][e]["key"]] for e in order]
    seen = await history(clients[0], job)
    assert [event_id for event_id, _, _ in seen] == [original[e["key"]] for b in batches for e in b]


async def test_any_retries_publish_every_event_exactly_once(
    make_client: MakeClient, broker: dict[str, Any]
) -> None:
    """Batches and retries of any subset of earlier batches, in any order, concurrently with
    new batches and through either instance (Redis): each retry gets the original ids, and the
    history holds every event once, in the order first published."""
    instances = 1 if broker["url"] == "memory://" else 2
    clients = [await make_client() for _ in range(instances)]
    run = on_loop(asyncio.get_running_loop())

    @settings(PROPERTY, max_examples=100)
    @given(program=retry_programs())
    def retry_anything(program: tuple[list[int], list[tuple[int, list[int], int]], bool]) -> None:
        run(_run_retries(clients, program))

    await asyncio.to_thread(retry_anything)
