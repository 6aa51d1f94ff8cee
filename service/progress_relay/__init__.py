"""progress-relay: relays the progress of long-running jobs to browsers over SSE."""

__version__ = "0.1.0"
