"""What one run of publish.lua costs inside Redis: 10,000 single-event publishes (the bench's
`tick` events, 100 jobs) through the Redis broker, in this process, on a redis-server of its
own; Redis's ``INFO commandstats`` then gives the script's µs per run and each command's share
(docs/performance.md, "Issue 17, the first rounds").

    .venv/bin/python -m bench.redis_script
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bench import servers
from bench.publisher import payload
from progress_relay.brokers.redis import RedisBroker
from progress_relay.config import load_settings
from progress_relay.wire.events import make_draft

JOBS = 100
ROUNDS = 100


async def _measure(url: str) -> None:
    settings = load_settings(environ={**servers.RELAY_ENV, "PROGRESS_RELAY_BROKER_URL": url})
    broker = RedisBroker(settings)
    await broker.start()
    stats = Redis.from_url(url)
    jobs = [f"script-{index}" for index in range(JOBS)]
    try:
        for job in jobs:
            await broker.create(job, ttl=None, meta=None)

        async def publish(rounds: int) -> None:
            for seq in range(rounds):
                draft = make_draft(servers.EVENT_NAME.decode(), payload(seq), "$", 65536)
                await asyncio.gather(*(broker.publish(job, [draft]) for job in jobs))

        await publish(10)  # every job has a history and an expiration
        await stats.config_resetstat()
        await publish(ROUNDS)
        commands = await stats.info("commandstats")
    finally:
        await stats.aclose()
        await broker.close()
    runs = commands["cmdstat_evalsha"]
    print(f"publish.lua: {runs['usec_per_call']:.1f} µs per run ({runs['calls']:,} runs)")
    for name, stat in sorted(commands.items(), key=lambda item: -item[1]["usec"]):
        if name not in ("cmdstat_evalsha", "cmdstat_config|resetstat"):
            print(f"  {name[len('cmdstat_') :]:10} {stat['usec'] / runs['calls']:5.2f} µs per run")


def main() -> None:
    with servers.redis_server() as url:
        asyncio.run(_measure(url))


if __name__ == "__main__":
    main()
