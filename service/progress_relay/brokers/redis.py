"""The Redis broker: several relay instances share jobs, ids and history; a restart loses nothing.

Keys (``P`` is ``broker.key_prefix``): ``P epoch`` and ``P seq`` for the deployment; per job
``P job:{id}`` (the snapshot as a hash of JSON values), ``P job:{id}:h`` (history, a Redis Stream
whose entry ids are the event seqs), ``P job:{id}:logs``, ``P job:{id}:eta`` and ``P job:{id}:c``
(the streamed text, a string that `content` events APPEND to; wire/content.py; read by
lua/read.lua). Publishing is one Lua script (lua/publish.lua; every script is a file in lua/).
Job lifetimes are Redis expirations, so a job expires even when no relay is running; each
instance notices the jobs of its own streams that have gone.

Memory is Redis's to bound (``maxmemory`` with ``maxmemory-policy noeviction``): a full Redis
refuses writes, which is 503 memory_full, and still runs reads and deletes (lua/read.lua,
lua/delete.lua). Every call goes through redis_calls.py (its time bound, its errors, the one
retry after a lost connection).

Open streams across instances (a snapshot's ``subscribers``): per job the hash ``P job:{id}:subs``
of instance id → that instance's count, and per instance ``P instance:{iid}``, a key that lives
``broker.instance_ttl``. Each instance writes its changed counts on its own task (coalesced: the
attach/detach path only marks the job) and, every third of the TTL, refreshes that key and all
its counts. A reader sums the fields of instances whose key exists, so a dead instance's streams
stop counting within the TTL; its fields are removed when a reader finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal, cast

import msgspec
from msgspec import Raw, UnsetType
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from progress_relay.brokers.base import (
    JobPage,
    Listener,
    MemoryUse,
    Published,
    Replay,
    Resync,
    too_many_jobs,
)
from progress_relay.brokers.redis_calls import RedisCalls, refused
from progress_relay.brokers.redis_channel import Channel
from progress_relay.brokers.redis_outbox import RedisOutbox
from progress_relay.brokers.redis_pipeline import PIPELINE_CONNECTIONS, Pipeline
from progress_relay.config import Settings
from progress_relay.wire.content import newest, trim_limit
from progress_relay.wire.errors import BrokerUnavailable, JobFinished, RelayError, no_job
from progress_relay.wire.events import CANCEL_REQUESTED, ContentData, Draft, Event, LogData
from progress_relay.wire.ids import Position, new_epoch
from progress_relay.wire.snapshot import (
    LogEntry,
    Snapshot,
    changes,
    own_eta,
    progress_percent,
    with_eta,
)
from progress_relay.wire.webhooks import JobWebhook

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_BATCH = msgspec.json.Decoder(list[tuple[str, Raw]])
_LOG_ENTRY = msgspec.json.Decoder(tuple[int, int, str, str])
# Jobs a listing reads at most for one page (when few of them match its statuses).
_LIST_SCAN = 5000
_SNAPSHOT_FIELDS = {f.name for f in msgspec.structs.fields(Snapshot)}
# When a read of snapshots reads their streamed text: always, only for a `reset`, never.
_TextRead = Literal["always", "if_reset", "never"]
# Fields of the hash that are not the snapshot's as they are: times (ms) and the text's flag
# (`replays` reads it with the text).
_NOT_JSON = frozenset({"created_at", "updated_at", "content_truncated"})


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _own_eta_arg(name: str, own: float | UnsetType | None) -> bytes | str:
    """The script's ETA argument of one event: "" (not a progress), "-" (the relay estimates) or
    the publisher's own ``eta_seconds`` as JSON."""
    if name != "progress":
        return ""
    return "-" if isinstance(own, UnsetType) else _encode(own)


def _etas(replies: Sequence[bytes]) -> list[bytes | None]:
    return [reply or None for reply in replies]


def _no_listener(job_id: str, events: Sequence[Event]) -> None:
    return None


async def _no_resync(job_ids: list[str], reset: bool) -> None:
    return None


class RedisBroker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings.jobs
        self._timeout = settings.broker.timeout
        prefix = settings.broker.key_prefix
        self._prefix = prefix
        self._epoch_key = f"{prefix}epoch"
        self._seq_key = f"{prefix}seq"
        # Every job's id, scored by when it expires: counts jobs for `jobs.max_jobs`.
        self._jobs_key = f"{prefix}jobs"
        # Every job's id, scored by a creation number: the job list, newest first. Expired
        # jobs leave it when a new job is created, or when a listing finds them gone.
        self._created_key = f"{prefix}jobs:created"
        self._created_count_key = f"{prefix}jobs:n"
        self._instance = uuid.uuid4().hex[:16]
        self._instance_ttl = settings.broker.instance_ttl
        # This instance's open streams per job (nonzero), the jobs whose count changed since it
        # was last written, and the task that writes them.
        self._local: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._counts_changed = asyncio.Event()
        self._counts_task: asyncio.Task[None] | None = None
        self._counts_closing = False
        # Blocking: a burst of requests (a thousand streams opening at once) waits for a
        # connection instead of failing with "Too many connections". RESP2: with RESP3 the
        # client (redis-py 8.1) turns on its maintenance notifications and then skips its check
        # for connections Redis has closed, so after a Redis restart every pooled connection
        # would fail once (redis/redis-py#4128, #4260).
        self._pool = BlockingConnectionPool.from_url(
            settings.broker.url,
            protocol=2,
            max_connections=settings.broker.pool_size,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
        )
        self._redis = Redis(connection_pool=self._pool)
        self._calls = RedisCalls(self._pool, self._timeout)
        # The publishes' scripts go out together on connections of their own, without a
        # socket timeout: each batch has one bound (brokers/redis_pipeline.py).
        self._pipeline_pool = ConnectionPool.from_url(
            settings.broker.url, protocol=2, socket_connect_timeout=self._timeout
        )
        self._pipeline = Pipeline(
            self._pipeline_pool,
            size=min(PIPELINE_CONNECTIONS, settings.broker.pool_size),
            timeout=self._timeout,
        )
        self._publish = self._redis.register_script(_script("publish"))
        self._create = self._redis.register_script(_script("create"))
        self._ensure_epoch = self._redis.register_script(_script("epoch"))
        self._read_script = self._redis.register_script(_script("read"))
        self._drop = self._redis.register_script(_script("delete"))
        self._keep = self._redis.register_script(_script("keep"))
        self._group = self._redis.register_script(_script("group"))
        self._epoch = ""
        self._listener: Listener = _no_listener
        self._resync: Resync = _no_resync
        self._resyncing: asyncio.Task[None] | None = None
        # RESP2 for the pub/sub connection: its messages are plain replies there, which the
        # channel reads itself (RESP3 would route them to the client's push handlers).
        self._pubsub_pool = ConnectionPool.from_url(
            settings.broker.url,
            protocol=2,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
        )
        self._channel = Channel(
            self._pubsub_pool, self._on_message, self._on_reconnect, confirm_timeout=self._timeout
        )
        # With webhooks on, publish.lua puts the events a webhook asked for into the outbox.
        self._outbox: RedisOutbox | None = None
        self._outbox_keys: list[str] = []
        self._outbox_args: list[Any] = []
        hooks = settings.webhooks
        if hooks.secret:
            outbox, dropped = f"{prefix}webhooks", f"{prefix}webhooks:dropped"
            self._outbox_keys = [outbox, dropped]
            self._outbox_args = [hooks.outbox_size, hooks.events, "1" if hooks.url else ""]
            self._outbox = RedisOutbox(
                self._redis,
                self._calls,
                outbox,
                dropped,
                self._instance,
                claim_after=hooks.claim_after,
                block=self._timeout / 2,
                snapshot_of=self._snapshot,
            )

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def outbox(self) -> RedisOutbox | None:
        return self._outbox

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    def set_resync(self, resync: Resync) -> None:
        self._resync = resync

    async def start(self) -> None:
        # A relay whose Redis is down still starts: /readyz says unready until Redis answers.
        with contextlib.suppress(RelayError):
            await self._refresh_epoch()
        await self._check_maxmemory()
        self._channel.start()
        self._counts_task = asyncio.get_running_loop().create_task(self._keep_counts())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._channel.connected_once.wait()

    async def close(self) -> None:
        resyncing, self._resyncing = self._resyncing, None
        if resyncing is not None and not resyncing.done():
            resyncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resyncing
        counts, self._counts_task = self._counts_task, None
        if counts is not None:
            # Asked to stop rather than cancelled: redis-py's shielded calls can swallow a
            # cancel, which left the task waiting for ever.
            self._counts_closing = True
            self._counts_changed.set()
            done, _ = await asyncio.wait([counts], timeout=2 * self._timeout)
            if not done:
                counts.cancel()
            # Gone at once rather than after the TTL: readers ignore this instance's fields now.
            instance = self._instance_key(self._instance)
            with contextlib.suppress(RelayError):
                await self._calls.run(lambda: self._redis.delete(instance))
        await self._channel.close()
        await self._pipeline.close()
        await self._redis.aclose()
        await self._pool.aclose()
        await self._pipeline_pool.aclose()
        await self._pubsub_pool.aclose()

    async def ping(self) -> None:
        await self._calls.run(self._redis.ping)
        if not self._channel.ready:
            raise BrokerUnavailable("the pub/sub connection to Redis is down")

    async def _refresh_epoch(self) -> bool:
        """Read the deployment's epoch (setting one if Redis has none); True if it changed."""
        raw = await self._calls.run(
            lambda: self._ensure_epoch(keys=[self._epoch_key, self._seq_key], args=[new_epoch()])
        )
        return self._set_epoch(raw.decode())

    def _set_epoch(self, epoch: str) -> bool:
        changed = bool(self._epoch) and epoch != self._epoch
        if changed:
            log.warning("Redis lost its data: epoch %s replaces %s", epoch, self._epoch)
        self._epoch = epoch
        return changed

    # -- keys -----------------------------------------------------------------------------

    def _keys(self, job_id: str) -> list[str]:
        """The job's hash, history, log tail, ETA points, its seen idempotency keys (a hash of
        key → seq, and a sorted set of when each was seen) and its streamed text."""
        base = f"{self._prefix}job:{job_id}"
        return [
            *(base, f"{base}:h", f"{base}:logs", f"{base}:eta"),
            *(f"{base}:k", f"{base}:kt", f"{base}:c"),
        ]

    def _subs_key(self, job_id: str) -> str:
        return f"{self._prefix}job:{job_id}:subs"

    def _instance_key(self, instance: str) -> str:
        return f"{self._prefix}instance:{instance}"

    def _channel_name(self, job_id: str) -> bytes:
        return f"{self._prefix}events:{job_id}".encode()

    # -- writes ---------------------------------------------------------------------------

    async def create(
        self, job_id: str, *, ttl: float | None, meta: Any, webhook: JobWebhook | None = None
    ) -> tuple[Snapshot, bool]:
        lifetime = ttl or self._settings.pending_ttl
        keys = [self._keys(job_id)[0], self._jobs_key, self._created_key, self._created_count_key]
        args: list[Any] = [
            _encode(meta),
            str(_ms(ttl)) if ttl else "",
            str(_ms(lifetime)),
            self._settings.max_jobs,
            job_id,
        ]
        if webhook is not None:
            args += [webhook.url, webhook.events or ""]
        created = await self._calls.run(lambda: self._create(keys=keys, args=args))
        if created == -1:
            raise too_many_jobs(self._settings)
        if created == -2:
            raise _refused("create.lua", "an argument out of range")
        snapshot = await self.snapshot(job_id)
        if snapshot is None:  # expired in between: only with a lifetime shorter than a request
            raise no_job(job_id)
        return snapshot, bool(created)

    async def publish(self, job_id: str, drafts: Sequence[Draft]) -> Published:
        return await self._run_publish(job_id, drafts, "publish")

    async def write_group(self, job_id: str, fields: dict[str, Any]) -> bool:
        key = self._keys(job_id)[0]
        args: list[Any] = []
        for name, value in fields.items():
            args += [name, _encode(value)]
        # Only a job that exists (HSET on a gone key would make a hash without expiry), and not
        # a group older than the stored one (lua/group.lua).
        written = await self._calls.run(lambda: self._group(keys=[key], args=args))
        return bool(written)

    async def snapshots(self, job_ids: Sequence[str]) -> list[Snapshot | None]:
        replays = await self._read([(job_id, None) for job_id in job_ids], text="never")
        return [None if replay is None else replay.snapshot for replay in replays]

    async def keep_children(self, parent_id: str, children: Sequence[str]) -> None:
        if not children:
            return
        per = len(self._keys(parent_id))
        keys = [self._keys(parent_id)[0], self._jobs_key]
        for child in children:
            keys += self._keys(child)
        args: list[Any] = [per, *children]
        kept = await self._calls.run(lambda: self._keep(keys=keys, args=args))
        if kept == -2:
            raise _refused("keep.lua", "the argument count")

    async def request_cancel(self, job_id: str) -> tuple[Snapshot, Event | None]:
        try:
            published = await self._run_publish(job_id, [CANCEL_REQUESTED], "cancel")
            event: Event | None = published.events[0]
        except _AlreadyRequested:
            event = None
        snapshot = await self.snapshot(job_id)
        if snapshot is None:
            raise no_job(job_id)
        return snapshot, event

    async def _run_publish(self, job_id: str, drafts: Sequence[Draft], mode: str) -> Published:
        """Publish, then publish again only the drafts whose keys were not seen if the script
        found some that were (it publishes nothing then), until nothing new was seen."""
        ids: list[str | None] = [None] * len(drafts)
        while True:
            pending = [index for index, known in enumerate(ids) if known is None]
            reply = await self._run_script(job_id, [drafts[i] for i in pending], mode)
            if reply[0] != b"seen":
                break
            epoch = reply[1].decode()
            for index, seq in zip(pending, reply[3:], strict=True):
                if seq != b"0":
                    ids[index] = str(Position(epoch, int(seq)))
            if None not in ids:
                return Published([], [i for i in ids if i is not None], bool(reply[2]))
        return self._outcome(job_id, drafts, pending, ids, reply)

    def _outcome(
        self,
        job_id: str,
        drafts: Sequence[Draft],
        pending: list[int],
        ids: list[str | None],
        reply: list[Any],
    ) -> Published:
        """What a run of publish.lua that was not "seen" means: the events it published (the
        drafts at ``pending``), or the error it stands for."""
        outcome = reply[0]
        if outcome == b"full":
            raise too_many_jobs(self._settings)
        if outcome == b"finished":
            raise JobFinished(f"job {job_id} has already {reply[1].decode().strip(chr(34))}")
        if outcome == b"missing":
            raise no_job(job_id)
        if outcome == b"already":
            raise _AlreadyRequested
        if outcome == b"invalid":
            raise _refused("publish.lua", reply[1].decode())
        self._set_epoch(reply[1].decode())
        first = int(reply[2])
        # The script added the ETA to progress events (as with_eta does): reply[5:], per event.
        events = [
            self._event(job_id, first + offset, drafts[index].name, with_eta(drafts[index], eta))
            for offset, (index, eta) in enumerate(zip(pending, _etas(reply[5:]), strict=True))
        ]
        for event, index in zip(events, pending, strict=True):
            ids[index] = event.id
        parent = msgspec.json.decode(reply[4]) if reply[4] else None
        return Published(events, [i for i in ids if i is not None], bool(reply[3]), parent)

    async def publish_many(
        self, batches: Sequence[tuple[str, Sequence[Draft]]]
    ) -> list[Published | RelayError]:
        """publish.lua runs, one per job (each atomic on its own), sent with the other calls of
        this turn (brokers/redis_pipeline.py). A job whose keys the script found seen (a retry)
        is finished as ``publish`` does; so is one whose run found the script not loaded (after
        a Redis restart)."""
        calls = [self._script_call(job_id, drafts, "publish") for job_id, drafts in batches]
        sha = self._publish.sha

        async def run() -> list[Any]:
            replies = await asyncio.gather(
                *(self._pipeline.call("EVALSHA", sha, len(k), *k, *a) for k, a, _ in calls),
                return_exceptions=True,
            )
            for reply in replies:
                # A script's own error is its job's; any other (a lost connection) the call's.
                if isinstance(reply, BaseException) and not isinstance(reply, ResponseError):
                    raise reply
            return replies

        repeatable = all(call[2] for call in calls)
        replies = await self._calls.run(run, repeatable=repeatable)
        outcomes: list[Published | RelayError] = []
        for (job_id, drafts), reply in zip(batches, replies, strict=True):
            try:
                if isinstance(reply, NoScriptError) or (
                    isinstance(reply, list) and reply[0] == b"seen"
                ):
                    outcomes.append(await self._run_publish(job_id, drafts, "publish"))
                elif isinstance(reply, Exception):
                    outcomes.append(refused(reply))
                else:
                    fresh: list[str | None] = [None] * len(drafts)
                    pending = list(range(len(drafts)))
                    outcomes.append(self._outcome(job_id, drafts, pending, fresh, reply))
            except RelayError as exc:
                outcomes.append(exc)
        return outcomes

    async def _run_script(self, job_id: str, drafts: Sequence[Draft], mode: str) -> list[Any]:
        keys, args, repeatable = self._script_call(job_id, drafts, mode)
        # Run again after a lost connection only when a second run cannot publish twice.
        reply = await self._calls.run(
            lambda: self._pipelined(self._publish, keys, args), repeatable=repeatable, timed=False
        )
        return cast(list[Any], reply)

    def _script_call(
        self, job_id: str, drafts: Sequence[Draft], mode: str
    ) -> tuple[list[str], list[Any], bool]:
        """publish.lua's keys and arguments for ``drafts``, and whether running it twice cannot
        publish twice."""
        settings = self._settings
        names_data: list[Any] = []
        percents: list[str] = []
        owns: list[Any] = []
        fields: dict[str, Any] = {}
        final = ""
        texts: list[str] = []
        for draft in drafts:
            payload = draft.payload
            if isinstance(payload, ContentData):
                texts.append(payload.text)
            entry = (
                _encode((payload.level, payload.message)) if isinstance(payload, LogData) else b""
            )
            entry = entry[1:-1] if entry else b""
            names_data += [draft.name, draft.data, entry, draft.key or ""]
            percent = progress_percent(draft)
            percents.append("" if percent is None else repr(percent))
            own = own_eta(draft)
            owns.append(_own_eta_arg(draft.name, own))
            fields.update(changes(draft))
            if draft.terminal:
                final = str(fields.get("status", ""))
        pairs: list[Any] = []
        for name, value in fields.items():
            pairs += [name, _encode(value)]
        body = _encode([(draft.name, Raw(draft.data)) for draft in drafts])
        args: list[Any] = [
            new_epoch(),
            self._channel_name(job_id),
            settings.ring_events,
            settings.ring_bytes,
            settings.log_tail,
            _ms(settings.idle_ttl),
            _ms(settings.finished_ttl),
            mode,
            final,
            body,
            len(drafts),
            settings.max_jobs,
            job_id,
            _ms(settings.idempotency_window),
            settings.idempotency_keys,
            settings.content_bytes,
            trim_limit(settings.content_bytes),
            "".join(texts).encode(),
            *names_data,
            *percents,
            *owns,
            len(fields),
            *pairs,
            *self._outbox_args,
        ]
        job, history, logs, eta, seen, seen_at, content = self._keys(job_id)
        keys = [
            *(self._epoch_key, self._seq_key, job, history, logs, eta, self._jobs_key),
            *(seen, seen_at, self._created_key, self._created_count_key, content),
            *self._outbox_keys,
        ]
        repeatable = mode == "cancel" or all(draft.key is not None for draft in drafts)
        return keys, args, repeatable

    async def _pipelined(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """``script`` run with the other calls of this turn (brokers/redis_pipeline.py)."""
        try:
            return await self._pipeline.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis lost its scripts (a restart, SCRIPT FLUSH): load, run
            return await script(keys=keys, args=args)

    def _event(self, job_id: str, seq: int, name: str, data: bytes) -> Event:
        return Event(job_id, seq, str(Position(self._epoch, seq)), name, data)

    async def delete(self, job_id: str) -> Snapshot | None:
        snapshot = await self.snapshot(job_id)

        keys = [*self._keys(job_id), self._subs_key(job_id), self._jobs_key, self._created_key]
        await self._calls.run(lambda: self._drop(keys=keys, args=[job_id]))
        return snapshot

    async def reserve_seq(self) -> int:
        return int(await self._calls.run(lambda: self._redis.incr(self._seq_key)))

    # -- reads ----------------------------------------------------------------------------

    async def snapshot(self, job_id: str) -> Snapshot | None:
        (found,) = await self.replays([(job_id, None)])
        return None if found is None else found.snapshot

    async def replay(self, job_id: str, after: int) -> Replay | None:
        (found,) = await self.replays([(job_id, after)])
        return found

    async def replays(self, reads: Sequence[tuple[str, int | None]]) -> list[Replay | None]:
        # One read decides its `reset` alone (catchup.plan, plan_resync): its text is needed
        # only if history does not cover it. Beside other reads a complete one may be reset too
        # (catchup.arrange), so each of several reads has its text.
        return await self._read(reads, text="if_reset" if len(reads) == 1 else "always")

    async def _read(
        self, reads: Sequence[tuple[str, int | None]], *, text: _TextRead
    ) -> list[Replay | None]:
        """Snapshots (with their streamed text as ``text`` says), their seqs, the seq trimmed up
        to and history, all read in one script (lua/read.lua) so that they agree with each other
        and with one instant of the sequence: a `reset` holds exactly the text of the events up
        to its id."""
        keys: list[str] = []
        args: list[Any] = [self._settings.content_bytes]
        for job_id, after in reads:
            key, history, logs, *_, content = self._keys(job_id)
            keys += [key, logs, history, content]
            args.append("" if after is None else f"({after}-0" if after else "-")
            how = _how(text, after)
            args.append("all" if how == "read" else str(after) if how == "script" else "")
        replies: list[Any] = await self._calls.run(lambda: self._read_script(keys=keys, args=args))
        found: list[Replay | None] = []
        for (job_id, after), reply in zip(reads, replies, strict=True):
            flat, logs_raw, entries, stored, tail = reply
            if not flat:
                found.append(None)
                continue
            fields: dict[bytes, bytes] = dict(zip(flat[::2], flat[1::2], strict=True))
            snapshot = self._snapshot(job_id, fields, logs_raw)
            if stored >= 0:  # else left UNSET: not needed (a reset would refuse to go without)
                cut = fields.get(b"content_truncated") == b"true"
                snapshot.content, snapshot.content_truncated = newest(tail, stored, cut)
            seq = int(fields.get(b"last_seq", b"0"))
            dropped = int(fields.get(b"dropped", b"0"))
            events = []
            for entry_id, pairs in entries:
                entry = dict(zip(pairs[::2], pairs[1::2], strict=True))
                seq_of = int(entry_id.split(b"-", 1)[0])
                events.append(self._event(job_id, seq_of, entry[b"e"].decode(), entry[b"d"]))
            complete = after is not None and after >= dropped
            found.append(Replay(snapshot, events, complete, seq))
        return found

    def _snapshot(self, job_id: str, fields: dict[bytes, bytes], logs: list[bytes]) -> Snapshot:
        values: dict[str, Any] = {"id": job_id}
        for raw_name, raw in fields.items():
            name = raw_name.decode()
            if name in _SNAPSHOT_FIELDS and name not in _NOT_JSON:
                values[name] = msgspec.json.decode(raw)
        values["created_at"] = _time(fields[b"created_at"])
        values["updated_at"] = _time(fields.get(b"updated_at", fields[b"created_at"]))
        last_seq = int(fields.get(b"last_seq", b"0"))
        values["last_event_id"] = str(Position(self._epoch, last_seq)) if last_seq else None
        snapshot = msgspec.convert(values, Snapshot)
        for raw in logs:
            seq, at, level, message = _LOG_ENTRY.decode(raw)
            entry = LogEntry(str(Position(self._epoch, seq)), _time(at), level, message)
            snapshot.logs.append(entry)
        return snapshot

    async def jobs(self, statuses: frozenset[str], limit: int, before: int | None) -> JobPage:
        """Reads the creation index in chunks and each job's snapshot; gives up a page after
        ``_LIST_SCAN`` jobs that do not match, so one call stays bounded."""
        found: list[Snapshot] = []
        scanned = 0
        position = before
        while scanned < max(_LIST_SCAN, limit):
            top = "+inf" if position is None else f"({position}"
            rows = cast(
                list[tuple[bytes, float]],
                await self._calls.run(
                    functools.partial(
                        self._redis.zrevrangebyscore,
                        self._created_key,
                        top,
                        "-inf",
                        start=0,
                        num=limit + 1,
                        withscores=True,
                    )
                ),
            )
            if not rows:
                return JobPage(found, None)
            job_ids = [member.decode() for member, _ in rows]
            replays = await self._read([(job_id, None) for job_id in job_ids], text="never")
            gone = []
            more = False  # the page is full and at least one job follows it
            for job_id, (_, score), replay in zip(job_ids, rows, replays, strict=True):
                if len(found) == limit:
                    more = True
                    break
                scanned += 1
                position = int(score)
                if replay is None:
                    gone.append(job_id)
                elif not statuses or replay.snapshot.status in statuses:
                    found.append(replay.snapshot)
            if gone:
                await self._calls.run(functools.partial(self._redis.zrem, self._created_key, *gone))
            if more:
                return JobPage(found, position)
            if len(rows) <= limit:
                return JobPage(found, None)
        return JobPage(found, position)

    async def existing(self, job_ids: Iterable[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        if not self._channel.ready:
            # Redis may have come back empty and this instance not yet caught up: a job that
            # is missing now may be about to get its `reset`, not an expiry.
            raise BrokerUnavailable("the pub/sub connection to Redis is down")

        async def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.exists(self._keys(job_id)[0])
            replies: list[Any] = await pipe.execute()
            return replies

        found = await self._calls.run(read)
        return {job_id for job_id, exists in zip(ids, found, strict=True) if exists}

    async def job_counts(self) -> dict[str, int]:
        async def count() -> dict[str, int]:
            counts: Counter[str] = Counter()
            now_ms = int(time.time() * 1000)
            members = await self._redis.zrangebyscore(self._jobs_key, now_ms, "+inf")
            job_ids = [member.decode() for member in cast(list[bytes], members)]
            for start in range(0, len(job_ids), 5000):
                pipe = self._redis.pipeline(transaction=False)
                for job_id in job_ids[start : start + 5000]:
                    pipe.hget(self._keys(job_id)[0], "status")
                for status in await pipe.execute():
                    if status is not None:
                        counts[msgspec.json.decode(status)] += 1
            return dict(counts)

        return await self._calls.run(count)

    async def memory(self) -> MemoryUse:
        """Redis's own: ``used_memory`` against ``maxmemory`` (0 when it has none)."""
        info = await self._calls.run(lambda: self._redis.info("memory"))
        return MemoryUse(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)), 0)

    async def _check_maxmemory(self) -> None:
        """Say at start-up when Redis does not bound its memory the way the relay needs: with
        ``maxmemory`` and ``maxmemory-policy noeviction`` a full Redis refuses writes (503
        memory_full); an evicting policy would drop a job's keys one by one, and a reader
        could miss events without being told."""
        try:
            info = await self._calls.run(lambda: self._redis.info("memory"))
        except RelayError:
            return  # Redis is not up yet: /readyz says so
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            log.warning(
                "Redis evicts keys when it is full (maxmemory-policy %s): a job's history could "
                "vanish without a reset; set maxmemory-policy noeviction",
                policy,
            )
        elif not int(info.get("maxmemory", 0)):
            log.warning(
                "Redis has no maxmemory: nothing bounds what jobs hold; set maxmemory (with "
                "maxmemory-policy noeviction) to what Redis may use"
            )

    # -- live events ----------------------------------------------------------------------

    async def watch(self, job_id: str) -> None:
        await self._channel.subscribe(self._channel_name(job_id))

    def unwatch(self, job_id: str) -> None:
        self._channel.unsubscribe(self._channel_name(job_id))

    # -- open streams across instances ---------------------------------------------------

    def count_subscribers(self, job_id: str, count: int) -> None:
        if count:
            self._local[job_id] = count
        else:
            self._local.pop(job_id, None)
        self._dirty.add(job_id)
        self._counts_changed.set()

    async def subscribers(self, job_ids: Sequence[str], local: Sequence[int]) -> list[int]:
        return await self._calls.run(lambda: self._count_subscribers(job_ids, local))

    async def _count_subscribers(self, job_ids: Sequence[str], local: Sequence[int]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._subs_key(job_id))
        rows = cast(list[dict[bytes, bytes]], await pipe.execute())
        own = self._instance.encode()
        others = sorted({instance for row in rows for instance in row if instance != own})
        alive: set[bytes] = set()
        if others:
            keys = [self._instance_key(instance.decode()) for instance in others]
            found = await self._redis.mget(keys)
            alive = {i for i, value in zip(others, found, strict=True) if value is not None}
        totals = []
        dead = self._redis.pipeline(transaction=False)
        for job_id, row, count in zip(job_ids, rows, local, strict=True):
            for instance, raw in row.items():
                if instance in alive:
                    count += int(raw)
                elif instance != own:
                    dead.hdel(self._subs_key(job_id), instance)
            totals.append(count)
        if len(dead):
            await dead.execute()
        return totals

    async def _keep_counts(self) -> None:
        """Writes the counts that changed, as they change; every third of the TTL, this
        instance's key and all of its counts (a Redis that lost them gets them back)."""
        every = self._instance_ttl / 3
        next_beat = 0.0
        while not self._counts_closing:
            beat = time.monotonic() >= next_beat
            dirty, self._dirty = self._dirty, set()
            self._counts_changed.clear()
            try:
                await self._write_counts(self._local.keys() if beat else dirty, beat=beat)
            except RelayError as exc:  # unreachable, or full: the counts wait for Redis
                log.debug("writing open-stream counts failed (%s); retrying", exc)
                self._dirty |= dirty
                await asyncio.sleep(min(every, 1.0))
                continue
            if beat:
                next_beat = time.monotonic() + every
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                    await self._counts_changed.wait()

    async def _write_counts(self, job_ids: Iterable[str], *, beat: bool) -> None:
        ttl = _ms(self._instance_ttl)
        jobs = list(job_ids)

        async def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            if beat:
                pipe.set(self._instance_key(self._instance), b"1", px=ttl)
            for job_id in jobs:
                key = self._subs_key(job_id)
                count = self._local.get(job_id)
                if count:
                    pipe.hset(key, self._instance, count)
                    pipe.pexpire(key, ttl)
                else:
                    pipe.hdel(key, self._instance)
            if len(pipe):
                await pipe.execute()

        await self._calls.run(write)

    def _on_message(self, channel: bytes, message: bytes) -> None:
        job_id = channel[len(self._prefix) + len("events:") :].decode()
        raw_epoch, first, body = message.split(b" ", 2)
        epoch = raw_epoch.decode()
        if not self._epoch:
            self._epoch = epoch
        elif epoch != self._epoch:
            # Another instance found Redis empty and began a new epoch: resync like a reconnect.
            self._set_epoch(epoch)
            self._resyncing = asyncio.get_running_loop().create_task(self._resync_all())
            return
        start = int(first)
        batch = _BATCH.decode(body)
        events = [
            self._event(job_id, start + i, name, bytes(data))
            for i, (name, data) in enumerate(batch)
        ]
        self._listener(job_id, events)

    async def _resync_all(self) -> None:
        try:
            await self._on_reconnect(reset=True)
        except ConnectionError as exc:
            log.warning("resync after a new epoch failed (%s); the next reconnect retries", exc)

    async def _on_reconnect(self, reset: bool = False) -> None:
        try:
            changed = await self._refresh_epoch()
        except RelayError as exc:
            # Without the epoch it cannot tell a gap from lost history: the channel gives up
            # this connection and tries again after its backoff.
            raise ConnectionError(f"could not read the epoch after reconnecting: {exc}") from None
        job_ids = [
            channel[len(self._prefix) + len("events:") :].decode()
            for channel in sorted(self._channel.wanted)
        ]
        await self._resync(job_ids, changed or reset)


def _how(text: _TextRead, after: int | None) -> Literal["read", "script", "skip"]:
    """How a read gets a job's text (lua/read.lua): always; only when history does not cover
    ``after``; or not at all."""
    if text == "always" or (text == "if_reset" and after is None):
        return "read"
    return "script" if text == "if_reset" else "skip"


def _time(raw: bytes | int) -> datetime:
    return datetime.fromtimestamp(int(raw) / 1000, UTC)


class _AlreadyRequested(Exception):
    pass


def _refused(script: str, why: str) -> BrokerUnavailable:
    """A script refused its arguments before writing anything: a fault of this relay (its
    checks should have refused the request first), not of the request."""
    log.error("%s refused its arguments (%s); nothing was written", script, why)
    return BrokerUnavailable("Redis refused the request; retry")
