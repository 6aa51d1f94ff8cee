"""Property tests: what any publisher can make a frame say, and what any subscriber that comes
and goes sees of any sequence of publishes.

The encoder's frames are read by a parser written here from the WHATWG "event stream
interpretation" algorithm, not by the service's code nor tests/support/sse_client.py. The resume
property runs through the real HTTP relay on both brokers and reads with
tests/support/sse_client.py (it checks ids and payloads, not bytes). Hypothesis cannot await,
so it runs in a worker thread and each example drives the relay on the test's own event loop
(where pytest-aiohttp's fixtures live).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from progress_relay.wire.events import EVENT_NAME_PATTERN, RESERVED, Event, make_draft
from progress_relay.wire.ids import JOB_ID_PATTERN, Position, new_epoch
from tests.support.app import MakeClient
from tests.support.properties import PROPERTY, on_loop
from tests.support.sse_client import Frame, SSEReader

# Names whose payload has a schema: arbitrary data would be refused for a reason other than the
# name, and a terminal name would end the test's job.
TYPED = frozenset({"progress", "log", "content", "complete", "failed", "cancelled"})


# --- An independent SSE parser ---------------------------------------------------------------


@dataclass
class Dispatched:
    last_event_id: str
    type: str
    data: str


@dataclass
class Parsed:
    events: list[Dispatched] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)
    retry: int | None = None
    pending: str = ""  # text after the last line break: an incomplete line, never dispatched


def whatwg_parse(stream: bytes) -> Parsed:
    """https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

    Unknown fields are ignored by a browser; they are collected here, because a frame that has one
    was written by someone other than the relay."""
    text = stream.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")
    # Lines end with CRLF, a lone CR or a lone LF, and only those: not U+2028, U+0085, ...
    *lines, pending = re.split("\r\n|\r|\n", text)
    parsed = Parsed(pending=pending)
    event_type, data, last_event_id = "", "", ""
    for line in lines:
        if line == "":
            if data == "":
                event_type = ""
                continue
            parsed.events.append(
                Dispatched(last_event_id, event_type or "message", data.removesuffix("\n"))
            )
            event_type, data = "", ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_event_id = value
        elif name == "retry":
            if re.fullmatch("[0-9]+", value):
                parsed.retry = int(value)
        else:
            parsed.unknown_fields.append(name)
    return parsed


def test_the_independent_parser_follows_the_spec() -> None:
    # The parser must be able to tell bad frames from good ones, or the properties prove nothing.
    parsed = whatwg_parse(
        b"retry: 10\r\n\r: c\rid: 1\nevent: a\rdata:x\r\ndata\n\nid\n\nbogus: 1\n"
    )
    assert parsed.retry == 10
    assert parsed.events == [Dispatched("1", "a", "x\n")]
    assert parsed.unknown_fields == ["bogus"]
    assert whatwg_parse("data: a\u2028b\x85c\n\n".encode()) == Parsed(
        events=[Dispatched("", "message", "a\u2028b\x85c")]
    )
    assert whatwg_parse(b"id: 7\ndata: 1\n\ndata: 2\n\nid: a\x00b\ndata: 3\n\n").events == [
        Dispatched("7", "message", "1"),
        Dispatched("7", "message", "2"),
        Dispatched("7", "message", "3"),
    ]
    assert whatwg_parse(b"data: unfinished\n").events == []
    assert whatwg_parse(b"event: x\n\ndata: y\n\n").events == [Dispatched("", "message", "y")]


# --- Frame encoder -----------------------------------------------------------------------------

# Characters a naive encoder or parser gets wrong, mixed into arbitrary (surrogate-free) text.
AWKWARD = ["\n", "\r", "\u2028", "\u2029", "\x85", "\x00", "\ufeff", '"', "\\", ":", " "]
TEXT = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(AWKWARD)), max_size=20)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
EVENT_NAMES = st.from_regex(EVENT_NAME_PATTERN, fullmatch=True).filter(
    lambda name: name not in RESERVED and name not in TYPED
)
JOB_IDS = st.from_regex(JOB_ID_PATTERN, fullmatch=True)


@st.composite
def json_documents(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A JSON value and one of its many spellings: escaped or raw non-ASCII, compact or indented,
    with LF, CRLF or CR between tokens (json.dumps escapes every line break inside strings)."""
    value = draw(JSON_VALUES)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
    )
    text = text.replace("\n", draw(st.sampled_from(["\n", "\r\n", "\r"])))
    return value, text.encode()


def _one_event(stream: bytes) -> Dispatched:
    parsed = whatwg_parse(stream)
    assert (parsed.unknown_fields, parsed.pending, parsed.retry) == ([], "", None), stream
    [event] = parsed.events
    return event


@settings(PROPERTY, max_examples=300)
@given(
    name=EVENT_NAMES,
    document=json_documents(),
    job_id=JOB_IDS,
    seq=st.integers(1, 2**63 - 1),
)
def test_any_event_is_one_frame_that_round_trips(
    name: str, document: tuple[Any, bytes], job_id: str, seq: int
) -> None:
    value, spelled = document
    draft = make_draft(name, spelled, "$", 1 << 20)
    event_id = str(Position(new_epoch(), seq))
    event = Event(job_id, seq, event_id, draft.name, draft.data)

    single = _one_event(event.frame)
    assert (single.last_event_id, single.type) == (event_id, name)
    assert json.loads(single.data) == value
    multi = _one_event(event.job_frame)
    assert (multi.last_event_id, multi.type) == (event_id, name)
    assert json.loads(multi.data) == {"job": job_id, "data": value}
    # Frames are self-delimiting: back to back, each is still exactly itself.
    assert whatwg_parse(event.frame + event.job_frame + event.frame).events == [
        single,
        multi,
        single,
    ]


# The documented rules, spelled out independently of the service's pattern.
DOCUMENTED_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
DOCUMENTED_RESERVED = {"reset", "cancel_requested", "error"}
INJECTIONS = [
    "\n",
    "\r",
    "\r\n",
    "\ndata: x",
    "\r\rid: 1",
    "\n\nevent: y\ndata: z",
    "\nretry: 1",
    ": c",
    " ",
    "\u2028",
    "\x85",
    "\x00",
]
ANY_NAMES = st.one_of(
    EVENT_NAMES,
    st.text(st.characters(codec="utf-8"), max_size=70),
    st.tuples(EVENT_NAMES, st.sampled_from(INJECTIONS), st.text(max_size=5)).map("".join),
    st.tuples(st.sampled_from(INJECTIONS), EVENT_NAMES).map("".join),
    st.sampled_from(sorted(DOCUMENTED_RESERVED)),
).filter(lambda name: name not in TYPED)


async def _publish_any_name(
    client: TestClient[Any, Any], name: str, document: tuple[Any, bytes], ascii_name: bool
) -> None:
    value, spelled = document
    job = f"n{uuid.uuid4().hex}"
    body = b'{"event":%s,"data":%s}' % (json.dumps(name, ensure_ascii=ascii_name).encode(), spelled)
    response = await client.post(
        f"/v1/jobs/{job}/events", data=body, headers={"Content-Type": "application/json"}
    )
    accepted = DOCUMENTED_NAME.fullmatch(name) is not None and name not in DOCUMENTED_RESERVED
    if not accepted:
        assert response.status == 422, await response.text()
        assert (await response.json())["error"]["code"] == "invalid_event"
        # Refused whole: not even the job was created.
        assert (await client.get(f"/v1/jobs/{job}")).status == 404
    else:
        assert response.status == 200, await response.text()
    ids: list[str] = (await response.json())["ids"] if accepted else []
    sentinel = await client.post(f"/v1/jobs/{job}/events", json={"event": "complete"})
    assert sentinel.status == 200, await sentinel.text()
    ids += (await sentinel.json())["ids"]
    expected = [(name, value)] if accepted else []
    expected.append(("complete", {}))
    for path, wrap in ((f"/v1/jobs/{job}/stream", False), (f"/v1/stream?job={job}", True)):
        stream = await client.get(path)
        assert stream.status == 200
        parsed = whatwg_parse(await stream.read())  # the job is complete: the stream ends
        assert (parsed.retry, parsed.unknown_fields, parsed.pending) == (3000, [], "")
        received = [
            (event.last_event_id, event.type, json.loads(event.data)) for event in parsed.events
        ]
        assert received == [
            (event_id, event_name, {"job": job, "data": data} if wrap else data)
            for event_id, (event_name, data) in zip(ids, expected, strict=True)
        ]


async def test_any_name_is_refused_or_round_trips_exactly(make_client: MakeClient) -> None:
    client = await make_client()
    run = on_loop(asyncio.get_running_loop())

    @settings(PROPERTY, max_examples=150)
    @given(name=ANY_NAMES, document=json_documents(), ascii_name=st.booleans())
    def publish_any_name(name: str, document: tuple[Any, bytes], ascii_name: bool) -> None:
        run(_publish_any_name(client, name, document, ascii_name))

    await asyncio.to_thread(publish_any_name)


# --- Resume ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """What one subscriber follows: one job on its own stream, or jobs on /v1/stream?job=..."""

    jobs: tuple[int, ...]
    multi: bool


@dataclass(frozen=True)
class Publish:
    job: int
    count: int
    terminal: bool  # the last of the batch is `complete`
    instance: int = 0  # the relay it is sent to (with Redis: one of two sharing it)


@dataclass(frozen=True)
class Disconnect:
    subscriber: int
    after: int  # event frames read first (fewer if the stream is caught up sooner)


@dataclass(frozen=True)
class Reconnect:
    subscriber: int
    # How the last id is sent; "both" puts an older id in the query, which the header must beat.
    via: Literal["header", "query", "both"]
    racing: tuple[Publish, ...]  # published while the connection opens, all at once
    instance: int = 0


@dataclass(frozen=True)
class Cancel:
    job: int
    instance: int = 0


Step = Publish | Disconnect | Reconnect | Cancel


@dataclass(frozen=True)
class Program:
    jobs: int
    ring: int
    watches: tuple[Watch, ...]
    steps: tuple[Step, ...]


BIG_RING = 1000  # never outrun by a program: no `reset` is ever due


@st.composite
def programs(draw: st.DrawFn) -> Program:
    jobs = draw(st.integers(1, 3))
    ring = draw(st.sampled_from([3, 5, BIG_RING]))
    job = st.integers(0, jobs - 1)
    watches = draw(
        st.lists(
            job.map(lambda j: Watch((j,), multi=False))
            | st.sets(job, min_size=1).map(lambda js: Watch(tuple(sorted(js)), multi=True)),
            min_size=1,
            max_size=3,
        )
    )
    subscriber = st.integers(0, len(watches) - 1)
    instance = st.integers(0, 1)
    racing = st.lists(
        st.builds(Publish, job, st.integers(1, 4), st.just(False), instance), max_size=3
    )
    step = st.one_of(
        st.builds(
            Publish,
            job,
            st.integers(1, 8),
            st.sampled_from([False, False, False, True]),
            instance,
        ),
        st.builds(Disconnect, subscriber, st.integers(0, 12)),
        st.builds(
            Reconnect,
            subscriber,
            st.sampled_from(["header", "query", "both"]),
            racing.map(tuple),
            instance,
        ),
        st.builds(Cancel, job, instance),
    )
    steps = draw(st.lists(step, max_size=30))
    return Program(jobs, ring, tuple(watches), tuple(steps))


def seq_of(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


class Viewer:
    """One subscriber, as a browser's EventSource: it remembers the last id it saw and sends it
    when it reconnects; a `reset` without an id leaves it as it was."""

    def __init__(self, index: int, watch: Watch, job_ids: list[str]) -> None:
        self.index = index
        self.jobs = [job_ids[j] for j in watch.jobs]
        self.multi = watch.multi
        self.connections: list[list[Frame]] = []
        self.response: aiohttp.ClientResponse | None = None
        self.reader: SSEReader | None = None
        self.first: str | None = None
        self.last: str | None = None

    def __repr__(self) -> str:
        frames = [[(f.id, f.event) for f in connection] for connection in self.connections]
        return f"Viewer({self.index}, {self.jobs}, multi={self.multi}, frames={frames})"

    async def connect(self, client: TestClient[Any, Any], via: str) -> int:
        if self.multi:
            path = "/v1/stream?" + "&".join(f"job={job}" for job in self.jobs)
        else:
            path = f"/v1/jobs/{self.jobs[0]}/stream"
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        if self.last is not None:
            if via in ("header", "both"):
                headers["Last-Event-ID"] = self.last
            if via == "query":
                query["last_event_id"] = self.last
            elif via == "both" and self.first is not None:
                query["last_event_id"] = self.first
        response = await client.get(path, headers=headers, params=query)
        if response.status == 204:
            response.close()
            return 204
        assert response.status == 200, await response.text()
        self.response, self.reader = response, SSEReader(response)
        self.connections.append([])
        return 200

    def disconnect(self) -> None:
        if self.response is not None:
            self.response.close()
        self.response = self.reader = None

    async def read(self, limit: int, until: str) -> None:
        """Up to ``limit`` event frames, fewer once the frame with id ``until`` is read."""
        while self.reader is not None and limit > 0 and self.last != until:
            await self.next_frame()
            limit -= 1

    async def read_to_end(self) -> None:
        while self.reader is not None:
            await self.next_frame()

    async def next_frame(self) -> None:
        assert self.reader is not None
        while True:
            try:
                frame = await self.reader.next()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                frame = None  # dropped by the relay: the client reconnects
            if frame is None:
                self.disconnect()
                return
            if frame.event is None and frame.data is None:
                assert frame.retry == 3000 and not self.connections[-1], frame.raw
                continue
            self.connections[-1].append(frame)
            if frame.id is not None:
                self.first = self.first or frame.id
                self.last = frame.id
            return

    def check(self, published: dict[str, list[tuple[str, str, Any]]], ring: int) -> None:
        """Every event of each job exactly once and in order, except that a `reset` replaces
        the events up to the position it reflects; ids strictly increasing over all connections;
        and each id a promise that every event of every followed job up to it was received."""
        frames = [frame for connection in self.connections for frame in connection]
        seqs = [seq_of(frame.id) for frame in frames if frame.id is not None]
        for before, after in itertools.pairwise(seqs):
            assert before < after, f"id seq {after} came after {before}"
        for connection in self.connections:
            kinds = [frame.event == "reset" for frame in connection]
            assert kinds == sorted(kinds, reverse=True), "a `reset` after an event"
        if ring == BIG_RING:
            assert all(frame.event != "reset" for frame in frames), "a `reset` not due"
        index = {job: {e[0]: n for n, e in enumerate(published[job])} for job in self.jobs}
        position = dict.fromkeys(self.jobs, 0)  # per job: the index of the event due next
        for frame in frames:
            if self.multi:
                job, payload = frame.json["job"], frame.json["data"]
                assert set(frame.json) == {"job", "data"}
            else:
                job, payload = self.jobs[0], frame.json
            assert job in position, f"a frame of job {job}"
            expected = published[job]
            if frame.event == "reset":
                assert payload["id"] == job
                reflected = payload["last_event_id"]
                assert frame.id in (None, reflected), f"reset id {frame.id}, snapshot {reflected}"
                after = 0 if reflected is None else index[job][reflected] + 1
                assert after >= position[job], f"{job}: reset back to {reflected}"
                # (a cancel request does not start a pending job)
                names = {name for _, name, _ in expected[:after]} - {"cancel_requested"}
                status = "completed" if "complete" in names else "running" if names else "pending"
                assert payload["status"] == status
                position[job] = after
            else:
                due = position[job]
                assert due < len(expected), f"{job}: {frame.id} after the terminal event"
                got = (frame.id, frame.event, payload)
                assert got == expected[due], (
                    f"{job}: expected {expected[due][0]}, got {frame.id}"
                    + (
                        " (a duplicate)"
                        if frame.id in index[job] and index[job][frame.id] < due
                        else " (events missed)"
                    )
                )
                position[job] = due + 1
            if frame.id is not None:
                seq = seq_of(frame.id)
                for other, events in published.items():
                    if other in position:
                        due = sum(1 for e in events if seq_of(e[0]) <= seq)
                        assert position[other] >= due, (
                            f"id {frame.id} was sent while {other} still lacked events"
                        )
        for job in self.jobs:
            assert position[job] == len(published[job]), (
                f"{job}: {position[job]} of {len(published[job])} events"
            )


async def _run_program(relays: list[TestClient[Any, Any]], program: Program) -> None:
    """Run the steps one after the other (a Reconnect with the publishes racing it), finish, and
    check every subscriber. ``relays`` share one broker (with Redis, two instances)."""
    tag = uuid.uuid4().hex[:10]
    job_ids = [f"p{tag}-{n}" for n in range(program.jobs)]
    published: dict[str, list[tuple[str, str, Any]]] = {job: [] for job in job_ids}
    finished: set[str] = set()
    cancelled: set[str] = set()
    viewers = [Viewer(n, watch, job_ids) for n, watch in enumerate(program.watches)]
    counter = itertools.count()

    def relay(instance: int) -> TestClient[Any, Any]:
        return relays[instance % len(relays)]

    async def publish(job: str, count: int, terminal: bool, instance: int = 0) -> None:
        events = [("tick", {"n": next(counter)}) for _ in range(count)]
        if terminal:
            events[-1] = ("complete", {"result": next(counter)})
        body = {"events": [{"event": name, "data": data} for name, data in events]}
        response = await relay(instance).post(f"/v1/jobs/{job}/events", json=body)
        if job in finished:
            assert response.status == 409, await response.text()
            return
        assert response.status == 200, await response.text()
        ids = (await response.json())["ids"]
        published[job].extend((i, name, data) for i, (name, data) in zip(ids, events, strict=True))
        # (publishes racing a connection may answer out of order)
        published[job].sort(key=lambda event: seq_of(event[0]))
        if terminal:
            finished.add(job)

    async def cancel(job: str, instance: int) -> None:
        response = await relay(instance).post(f"/v1/jobs/{job}/cancel")
        if job in finished:
            assert response.status == 409, await response.text()
            return
        assert response.status == 202, await response.text()
        if job in cancelled:
            return  # asked before: no second event
        cancelled.add(job)
        # The answer has no event id; with nothing else under way, it is the job's newest.
        snapshot = await (await relay(instance).get(f"/v1/jobs/{job}")).json()
        published[job].append(
            (snapshot["last_event_id"], "cancel_requested", {"cancel_requested": True})
        )

    def newest(viewer: Viewer) -> str | None:
        ids = [events[-1][0] for job, events in published.items() if job in viewer.jobs and events]
        return max(ids, key=seq_of, default=None)

    try:
        # Every job exists before anyone subscribes: resuming with an id on a job that does not
        # exist is answered like a deleted one (204), which is not what this property is about.
        for job in job_ids:
            assert (await relay(0).post("/v1/jobs", json={"id": job})).status == 201
        for step in program.steps:
            if isinstance(step, Publish):
                await publish(job_ids[step.job], step.count, step.terminal, step.instance)
            elif isinstance(step, Cancel):
                await cancel(job_ids[step.job], step.instance)
            elif isinstance(step, Disconnect):
                viewer = viewers[step.subscriber]
                until = newest(viewer)
                if until is not None:  # else nothing is coming
                    await viewer.read(step.after, until)
                viewer.disconnect()
            elif viewers[step.subscriber].response is None:
                viewer = viewers[step.subscriber]
                await asyncio.gather(
                    viewer.connect(relay(step.instance), step.via),
                    *(publish(job_ids[p.job], p.count, False, p.instance) for p in step.racing),
                )
        # The end: every job finishes, every subscriber reads to the end of its stream, and
        # then, resuming with its last id, learns (204) that there is nothing more to come.
        for job in job_ids:
            if job not in finished:
                await publish(job, 1, True)
        for viewer in viewers:
            for _ in range(5):
                if viewer.response is None and await viewer.connect(relay(0), "header") == 204:
                    break
                await viewer.read_to_end()
            else:
                raise AssertionError(f"subscriber {viewer.index} never got its 204")
        for viewer in viewers:
            try:
                viewer.check(published, program.ring)
            except AssertionError as exc:
                # (hypothesis' note() is not available on the event loop's thread)
                seen = "\n  ".join(map(repr, viewers))
                raise AssertionError(f"subscriber {viewer.index}: {exc}\n  {seen}") from exc
    finally:
        for viewer in viewers:
            viewer.disconnect()


async def test_every_subscriber_sees_every_event_once_or_a_reset(
    make_client: MakeClient, broker: dict[str, Any]
) -> None:
    # With Redis, two instances per ring size, as in a deployment; the memory broker is one
    # process. (Relays with different rings share the Redis prefix, never a job.)
    instances = 1 if broker["url"] == "memory://" else 2
    clients = {
        ring: [
            await make_client(jobs={"ring_events": ring, "pending_ttl": 600.0})
            for _ in range(instances)
        ]
        for ring in (3, 5, BIG_RING)
    }
    run = on_loop(asyncio.get_running_loop())

    @settings(PROPERTY, max_examples=400)
    @given(program=programs())
    def resume(program: Program) -> None:
        run(_run_program(clients[program.ring], program))

    await asyncio.to_thread(resume)
