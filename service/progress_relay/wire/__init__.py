"""The wire: ids, events, snapshots, SSE frames, request and response bodies, errors."""
