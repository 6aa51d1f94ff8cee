"""The core of the relay: the hub, topics, subscribers, catch-up, the flusher and the reaper."""
