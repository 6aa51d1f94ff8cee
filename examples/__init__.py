"""Examples of backends and workers that publish progress through progress-relay with the Python
SDK (``progress_relay.client``); see examples/README.md."""
