"""Webhooks on the wire: a job's `webhook` at creation, the destinations the operator allows,
which events a receiver gets, and the body and headers of a delivery (the Standard Webhooks
scheme, https://www.standardwebhooks.com: `Webhook-Id`, `Webhook-Timestamp`,
`Webhook-Signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`)."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
from typing import Annotated, Literal, NamedTuple

import msgspec
from msgspec import Meta, Raw, Struct
from yarl import URL

WebhookEvents = Literal["terminal", "stages", "all"]
MAX_URL_LENGTH = 2048
TERMINAL = frozenset({"complete", "failed", "cancelled"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookIn(Struct, forbid_unknown_fields=True):
    url: Annotated[
        str,
        Meta(
            max_length=MAX_URL_LENGTH,
            description="http or https, without credentials; its destination must be in "
            "webhooks.allowed",
        ),
    ]
    events: (
        Annotated[
            WebhookEvents,
            Meta(description="terminal events only, also stage changes, or every event"),
        ]
        | None
    ) = None


class JobWebhook(NamedTuple):
    """A job's own receiver, checked; ``events`` None: as `webhooks.events` says."""

    url: str
    events: WebhookEvents | None = None


class Delivery(Struct, frozen=True):
    """One event for one receiver. ``url`` "" is the relay's `webhooks.url`; ``snapshot`` is
    the job's snapshot (without its streamed text) after the publish that carried the event."""

    id: str
    job: str
    event: str
    data: Raw
    snapshot: Raw
    url: str = ""


class _Body(Struct):
    id: str
    job: str
    event: str
    data: Raw
    snapshot: Raw


_encode = msgspec.json.Encoder().encode
DELIVERY = msgspec.json.Decoder(Delivery)
encode_delivery = _encode


def body(delivery: Delivery) -> bytes:
    """The JSON a receiver gets: ``{"id", "job", "event", "data", "snapshot"}``."""
    d = delivery
    return _encode(_Body(d.id, d.job, d.event, d.data, d.snapshot))


def signing_key(secret: str) -> bytes:
    """The HMAC key of ``webhooks.secret``: as Standard Webhooks serializes a key, base64 after
    `whsec_` (so its libraries take the same string); any other secret is its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def signature(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    """The `Webhook-Signature` header's value."""
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signature(secret, msg_id, timestamp, payload),
    }


def selected(events: WebhookEvents, name: str, stage_changed: bool) -> bool:
    """Whether a receiver asking for ``events`` gets an event named ``name``
    (``stage_changed``: a `progress` event that set a stage other than the job's)."""
    if events == "all" or name in TERMINAL:
        return True
    return events == "stages" and stage_changed


def pattern_problem(pattern: str) -> str:
    """What is wrong with an entry of `webhooks.allowed` ("" when nothing)."""
    if "://" in pattern:
        try:
            url = URL(pattern)
        except ValueError:
            return "is not a URL"
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            return "must be http(s)://host[:port] or a host pattern"
        if url.user or url.password or url.path not in ("", "/") or url.query_string:
            return "must be scheme, host and port only"
        return ""
    if not pattern or any(c in pattern for c in "/@:?# "):
        return "must be http(s)://host[:port] or a host pattern such as *.example.com"
    return ""


def destination_problem(url_text: str, allowed: tuple[str, ...]) -> str:
    """Why ``url_text`` may not be a webhook's destination ("" when it may)."""
    if len(url_text) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    if any(ord(c) <= 32 or ord(c) == 127 for c in url_text):
        return "the URL has spaces or control characters"
    try:
        url = URL(url_text)
    except ValueError:
        return "the URL is not valid"
    if url.scheme not in _DEFAULT_PORTS:
        return "the URL must be http or https"
    if not url.host:
        return "the URL has no host"
    if url.user is not None or url.password is not None:
        return "the URL must not carry credentials"
    if url.fragment:
        return "the URL must not have a fragment"
    if not any(_allows(pattern, url) for pattern in allowed):
        return f"{url.scheme}://{url.host}:{url.port} is not in webhooks.allowed"
    return ""


def _allows(pattern: str, url: URL) -> bool:
    host = (url.host or "").lower()
    if "://" in pattern:
        allowed = URL(pattern)
        return (
            allowed.scheme == url.scheme
            and (allowed.host or "").lower() == host
            and allowed.port == url.port
        )
    return fnmatch.fnmatchcase(host, pattern.lower())
