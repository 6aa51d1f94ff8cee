from __future__ import annotations

from tests.support.app import publish


async def test_publish_then_stream_replays_history(client, open_stream) -> None:
    first = await publish(client, "job-1", "progress", {"percent": 10})
    async with open_stream("/v1/jobs/job-1/stream") as (response, reader):
        assert response.status == 200
        retry = await reader.next()
        assert retry.raw == b"retry: 3000\n\n"
        [frame] = await reader.events(1)
        assert frame.raw == f'id: {first}\nevent: progress\ndata: {{"percent":10}}\n\n'.encode()
        second = await publish(client, "job-1", "complete", {"result": {"ok": True}})
        frames = await reader.until_end()
        assert [f.id for f in frames] == [second]
