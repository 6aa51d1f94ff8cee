"""Examples of backends and workers that publish progress through progress-relay with the Python
SDK (``service.client``); see examples/README.md."""
