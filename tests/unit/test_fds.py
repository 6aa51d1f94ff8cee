"""ops/fds.py: the open-file limit's line, and running out of descriptors said once, not per
failed accept."""

from __future__ import annotations

import errno
import logging
import resource

import pytest

from progress_relay.ops.fds import AcceptErrors, Limits, raise_limit

EMFILE = OSError(errno.EMFILE, "Too many open files")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failed_accepts_are_one_line_then_one_per_interval_then_one_when_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    errors = AcceptErrors(interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="progress_relay"):
        for _ in range(5000):
            errors.failed(EMFILE)
        clock.now += 9.9
        errors.failed(EMFILE)
        assert len(caplog.records) == 1
        clock.now += 0.2
        errors.failed(EMFILE)
        errors.accepted()
        errors.accepted()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("cannot accept new connections: Too many open files")
    assert "failed since" not in lines[0]
    assert "(5001 failed since the last line)" in lines[1]
    assert lines[2] == "accepting connections again (5002 failed accepts in all)"
    assert errors.failed_total == 5002
    assert all(record.exc_info is None for record in caplog.records)  # no traceback


def test_the_limit_line_says_what_was_raised() -> None:
    assert str(Limits(1024, 65536, 65536)) == (
        "open-file limit: soft 65536 (raised from 1024), hard 65536"
    )
    assert str(Limits(4096, 4096, resource.RLIM_INFINITY)) == (
        "open-file limit: soft 4096 (unchanged), hard unlimited"
    )


def test_raise_limit_sets_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft == hard and hard > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard - 1, hard))
        before, now, limit = raise_limit()
        assert limit == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
        assert now == hard or hard == resource.RLIM_INFINITY
        assert before <= now
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
