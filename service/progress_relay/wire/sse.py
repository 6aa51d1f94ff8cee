"""SSE frame encoding. Every frame is built once and the same ``bytes`` go to every subscriber.

Contract of the inputs: ids are ours (``<epoch>-<seq>``), event names have passed
``EVENT_NAME_PATTERN`` and data is compact JSON, so none can contain CR or LF; this is what
keeps a publisher from injecting fields or frames into a stream (checked at the edge, not here,
because this is the hot path).
"""

from __future__ import annotations

SEPARATOR = "\n"


def event_frame(event_id: str | None, name: str, data: bytes) -> bytes:
    if event_id is None:
        return b"event: %s\ndata: %s\n\n" % (name.encode(), data)
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), name.encode(), data)


def retry_frame(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def job_data(job_id: str, data: bytes) -> bytes:
    """The data of a multi-job stream frame: ``{"job": ID, "data": PAYLOAD}``.

    Job ids are limited to ``[A-Za-z0-9._:-]``, so they need no JSON escaping.
    """
    return b'{"job":"%s","data":%s}' % (job_id.encode(), data)
