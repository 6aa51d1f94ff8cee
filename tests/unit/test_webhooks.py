"""wire/webhooks.py (signature, destinations, which events go), ops/webhooks.py's backoff and the
[webhooks] settings."""

from __future__ import annotations

import pytest

from progress_relay.config import ConfigError, load_settings
from progress_relay.ops.webhooks import backoff
from progress_relay.wire.webhooks import (
    destination_problem,
    pattern_problem,
    selected,
    signature,
)


def test_the_signature_is_the_standard_webhooks_one() -> None:
    # The test vector of the Standard Webhooks libraries: a `whsec_` secret is base64.
    payload = b'{"test": 2432232314}'
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload) == expected
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, payload) != expected


def test_any_other_secret_is_its_bytes() -> None:
    # printf "1.2.{}" | openssl dgst -sha256 -hmac k -binary | base64
    assert signature("k", "1", 2, b"{}") == "v1,0vr2lR1sQLVj8F1ZrFHv3aWSgFrMt0Vg+vmqrQ6yltg="


ALLOWED = ("https://hooks.example.com", "http://127.0.0.1:9000", "*.internal.example")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/a?b=c", ""),
        ("https://HOOKS.example.com:443/a", ""),
        ("http://127.0.0.1:9000/x", ""),
        ("http://a.internal.example:81/x", ""),
        ("https://b.a.internal.example/x", ""),
        ("http://hooks.example.com/a", "not in webhooks.allowed"),
        ("https://hooks.example.com:8443/a", "not in webhooks.allowed"),
        ("http://127.0.0.1:9001/x", "not in webhooks.allowed"),
        ("http://localhost:9000/x", "not in webhooks.allowed"),
        ("http://internal.example/x", "not in webhooks.allowed"),
        ("https://hooks.example.com.evil.test/", "not in webhooks.allowed"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("https://u:p@hooks.example.com/", "credentials"),
        ("https://u@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/#f", "fragment"),
        ("https://hooks.example.com/\n", "control characters"),
        ("https:///x", "no host"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_destinations(url: str, problem: str) -> None:
    found = destination_problem(url, ALLOWED)
    assert (problem in found) if problem else found == "", found


def test_nothing_is_allowed_by_default() -> None:
    assert "not in webhooks.allowed" in destination_problem("https://a.example/", ())


@pytest.mark.parametrize(
    ("pattern", "fine"),
    [
        ("https://a.example", True),
        ("http://10.0.0.1:8080", True),
        ("*.example.com", True),
        ("a.example.com", True),
        ("ftp://a.example", False),
        ("https://a.example/path", False),
        ("https://u@a.example", False),
        ("a.example.com:80", False),
        ("", False),
    ],
)
def test_allowed_patterns(pattern: str, fine: bool) -> None:
    assert (pattern_problem(pattern) == "") is fine


@pytest.mark.parametrize(
    ("events", "name", "stage_changed", "sent"),
    [
        ("terminal", "complete", False, True),
        ("terminal", "failed", False, True),
        ("terminal", "cancelled", False, True),
        ("terminal", "progress", True, False),
        ("stages", "progress", True, True),
        ("stages", "progress", False, False),
        ("stages", "log", False, False),
        ("stages", "complete", False, True),
        ("all", "log", False, True),
        ("all", "custom.event", False, True),
    ],
)
def test_which_events_go(events: str, name: str, stage_changed: bool, sent: bool) -> None:
    assert selected(events, name, stage_changed) is sent  # type: ignore[arg-type]


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0), (500, 30.0)):
        for _ in range(50):
            wait = backoff(attempt, 1.0, 30.0)
            assert full / 2 <= wait <= full


def test_settings_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "PROGRESS_RELAY_WEBHOOKS_SECRET": "s",
            "PROGRESS_RELAY_WEBHOOKS_ALLOWED": "https://a.example, *.b.example",
            "PROGRESS_RELAY_WEBHOOKS_EVENTS": "stages",
            "PROGRESS_RELAY_WEBHOOKS_OUTBOX_SIZE": "5",
        }
    )
    hooks = settings.webhooks
    assert hooks.allowed == ("https://a.example", "*.b.example")
    assert (hooks.events, hooks.outbox_size, hooks.timeout) == ("stages", 5, 10.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"allowed": ["https://a.example"]}, "webhooks.secret"),
        ({"secret": "s", "allowed": ["ftp://a"]}, "webhooks.allowed"),
        ({"secret": "s", "url": "https://a.example/x"}, "not in webhooks.allowed"),
        ({"secret": "whsec_!!!"}, "base64"),
        ({"secret": "s", "events": "some"}, "webhooks.events"),
        ({"secret": "s", "outbox_size": 0}, "webhooks.outbox_size"),
    ],
)
def test_settings_out_of_shape_stop_the_start(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(overrides={"webhooks": values})
