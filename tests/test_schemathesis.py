"""Schemathesis against the real relay process: generated requests (valid and invalid) to every
operation of the document the relay serves must get no 5xx, and only documented statuses,
content types, headers and bodies, stream events included. Two relays: one open, and one that
needs credentials, where every request carries a subscriber token for job "0" alone (so
publishing is 401 and other jobs are 403)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from progress_relay.config import load_settings
from progress_relay.http.app import create_app
from progress_relay.http.openapi_document import build_document
from tests.test_process import Relay, start_relay

pytestmark = pytest.mark.memory_only  # real processes on the memory broker


def schemathesis_config(max_examples: int) -> schemathesis.Config:
    """Bounded and reproducible: a fixed seed, derandomized generation. A stream is read until it
    ends, sends 3 events, or for half a second, then judged on what it sent."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20261122,
            "generation": {"max-examples": max_examples, "deterministic": True, "mode": "all"},
            "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
            "request-timeout": 10,
            "operations": [
                {"include-path-regex": "stream$", "request-timeout": 0.5, "max-stream-events": 3},
            ],
        }
    )


# Jobs nobody publishes end quickly, so streams waiting for them end on their own.
OPEN_ENV = {
    "PROGRESS_RELAY_JOBS_PENDING_TTL": "0.2",
    "PROGRESS_RELAY_REAPER_INTERVAL": "0.1",
    "PROGRESS_RELAY_STREAM_HEARTBEAT": "0.1",
}
SECRET = "s" * 40
CREDENTIALS_ENV = {
    **OPEN_ENV,
    "PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": "publisher-token",
    "PROGRESS_RELAY_AUTH_SUBSCRIBE": "token",
    "PROGRESS_RELAY_AUTH_JWT_SECRET": SECRET,
}
# Invalid requests must also be refused (negative_data_rejection), not served leniently.
CHECKS = [
    negative_data_rejection,
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# The schemas are made at collection, before the relays run, from the same settings each relay
# reads from its environment; test_each_relay_serves_the_document_under_test checks that the
# relay serves exactly this document. (schemathesis.pytest.from_fixture, which would load it
# from the live relay, fails on pytest 9.2: it sets the private `Function._nodeid`.)
OPEN_DOCUMENT = build_document(create_app(load_settings(environ=OPEN_ENV)))
CREDENTIALS_DOCUMENT = build_document(create_app(load_settings(environ=CREDENTIALS_ENV)))
open_schema = schemathesis.openapi.from_dict(OPEN_DOCUMENT, config=schemathesis_config(30))
credentials_schema = schemathesis.openapi.from_dict(
    CREDENTIALS_DOCUMENT, config=schemathesis_config(15)
)


def running_relay(env: dict[str, str]) -> Iterator[Relay]:
    # WARNING: no access log, so the unread stderr pipe cannot fill up; errors still show.
    relay = start_relay("--log-level", "WARNING", env=env)
    yield relay
    code, _, log = relay.stop()
    assert "Traceback" not in log, log
    assert code == 0, log


@pytest.fixture(scope="module")
def open_relay() -> Iterator[Relay]:
    yield from running_relay(OPEN_ENV)


@pytest.fixture(scope="module")
def credentials_relay() -> Iterator[Relay]:
    yield from running_relay(CREDENTIALS_ENV)


@pytest.mark.parametrize(
    ("relay_fixture", "document"),
    [("open_relay", OPEN_DOCUMENT), ("credentials_relay", CREDENTIALS_DOCUMENT)],
    ids=["open", "credentials"],
)
def test_each_relay_serves_the_document_under_test(
    request: pytest.FixtureRequest, relay_fixture: str, document: dict[str, Any]
) -> None:
    relay: Relay = request.getfixturevalue(relay_fixture)
    served = httpx.get(f"{relay.base_url}/v1/openapi.json", timeout=10).json()
    assert served == document


@open_schema.parametrize()
def test_the_open_relay_conforms_to_its_document(case: Any, open_relay: Relay) -> None:
    case.call_and_validate(base_url=open_relay.base_url, checks=CHECKS)


@credentials_schema.parametrize()
def test_the_relay_with_credentials_conforms_to_its_document(
    case: Any, credentials_relay: Relay
) -> None:
    token = jwt.encode({"jobs": ["0"], "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    case.call_and_validate(
        base_url=credentials_relay.base_url,
        checks=CHECKS,
        headers={"Authorization": f"Bearer {token}"},
    )
