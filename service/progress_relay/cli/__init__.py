"""The command line: `progress-relay serve|publish|watch|jobs|token`."""
