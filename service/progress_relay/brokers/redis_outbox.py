"""Redis's webhook outbox: a stream that lua/publish.lua appends a job's deliveries to in the
same step as the publish (with MAXLEN: past ``webhooks.outbox_size`` the oldest are trimmed, and
counted in a key beside it), read by one consumer group that every instance joins as its own
consumer. XREADGROUP gives each entry to one instance; the entry stays pending, and the instance
renews it while it works on it, until it is delivered or given up (XACK and XDEL). An entry
pending past ``webhooks.claim_after`` without a renewal belongs to an instance that died: any
other takes it over (XAUTOCLAIM) and delivers it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from msgspec import Raw
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from progress_relay.brokers.outbox import Taken
from progress_relay.brokers.redis_calls import RedisCalls
from progress_relay.wire.snapshot import Snapshot
from progress_relay.wire.webhooks import Delivery

GROUP = "relay"
_encode = msgspec.json.Encoder().encode
_FLAT = msgspec.json.Decoder(tuple[list[str], list[str] | dict[str, str]])
SnapshotOf = Callable[[str, dict[bytes, bytes], list[bytes]], Snapshot]


class RedisOutbox:
    def __init__(
        self,
        redis: Redis,
        calls: RedisCalls,
        key: str,
        dropped_key: str,
        consumer: str,
        *,
        claim_after: float,
        block: float,
        snapshot_of: SnapshotOf,
    ) -> None:
        self._redis = redis
        self._calls = calls
        self.key = key
        self.dropped_key = dropped_key
        self._consumer = consumer
        self._claim_ms = max(1, int(claim_after * 1000))
        self._block_ms = max(1, int(block * 1000))
        self._snapshot_of = snapshot_of
        self._group_made = False

    async def start(self) -> None:
        await self._make_group()

    async def close(self) -> None:
        return None

    async def _make_group(self) -> None:
        try:
            async with asyncio.timeout(self._block_ms / 500):
                await self._redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_made = True

    async def take(self, most: int) -> list[Taken]:
        """Entries of instances that died first, then new ones (waiting up to ``block``)."""
        if not self._group_made:
            await self._make_group()
        try:
            claimed = await self._calls.run(
                lambda: self._redis.xautoclaim(
                    self.key, GROUP, self._consumer, self._claim_ms, "0-0", count=most
                )
            )
            entries = [entry for entry in claimed[1] if entry[1]]
            if not entries:
                read: Any = await self._calls.run(
                    lambda: self._redis.xreadgroup(
                        GROUP, self._consumer, {self.key: ">"}, count=most, block=self._block_ms
                    )
                )
                entries = [entry for _, found in read or [] for entry in found if entry[1]]
        except Exception:
            self._group_made = False  # Redis may have lost it: made again on the next take
            raise
        return [self._taken(entry_id, fields) for entry_id, fields in entries]

    def _taken(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Taken:
        job_id = fields[b"j"].decode()
        flat, logs = _FLAT.decode(fields[b"s"])
        pairs = {k.encode(): v.encode() for k, v in zip(flat[::2], flat[1::2], strict=True)}
        tail = [entry.encode() for entry in logs] if isinstance(logs, list) else []
        snapshot = self._snapshot_of(job_id, pairs, tail)
        delivery = Delivery(
            fields[b"i"].decode(),
            job_id,
            fields[b"e"].decode(),
            Raw(fields[b"d"]),
            Raw(_encode(snapshot)),
            fields[b"u"].decode(),
        )
        published = int(entry_id.split(b"-", 1)[0]) / 1000  # the entry id is its time in ms
        return Taken(entry_id.decode(), delivery, published)

    async def done(self, taken: Taken) -> None:
        async def ack() -> Any:
            pipe = self._redis.pipeline(transaction=True)
            pipe.xack(self.key, GROUP, taken.token)
            pipe.xdel(self.key, taken.token)
            return await pipe.execute()

        await self._calls.run(ack)

    async def renew(self, tokens: Sequence[str]) -> None:
        ids: list[int | bytes | str | memoryview[int]] = list(tokens)
        await self._calls.run(
            lambda: self._redis.xclaim(self.key, GROUP, self._consumer, 0, ids, justid=True)
        )

    async def dropped(self) -> int:
        raw = await self._calls.run(lambda: self._redis.get(self.dropped_key))
        return int(raw or 0)
