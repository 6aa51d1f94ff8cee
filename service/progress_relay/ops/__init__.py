"""Running the relay: the server and its drain, metrics, logs."""
