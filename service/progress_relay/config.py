"""Settings: one msgspec Struct per section, loaded from TOML, then environment, then CLI.

Precedence (lowest to highest): the defaults below, the TOML file,
``PROGRESS_RELAY_<SECTION>_<KEY>`` environment variables, command-line flags.
``config/default.toml`` documents every key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import msgspec
from msgspec import Meta, Struct

ENV_PREFIX = "PROGRESS_RELAY_"
# Read by the client commands (`progress-relay watch`, ...), not settings of the relay: a shell
# that exports them must still be able to run `progress-relay serve`.
CLIENT_ENV = frozenset({"PROGRESS_RELAY_URL", "PROGRESS_RELAY_TOKEN"})

Seconds = Annotated[float, Meta(gt=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(gt=0)]
# Job lifetimes, here and a job's own `ttl`: at most about 31 years, so that every broker can
# honour them (Redis takes expiries in milliseconds as a signed 64-bit number, and sorts jobs by
# expiry in a double, exact to 2**53 ms).
MAX_LIFETIME = 1e9
Lifetime = Annotated[float, Meta(gt=0, le=MAX_LIFETIME)]


class ServerSettings(Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    # The grace period of SIGTERM/SIGINT: in-flight requests get this long, then the rest is cut.
    shutdown_timeout: Seconds = 1.5
    # Streams end on shutdown with `retry:` a random delay up to this, so that their clients
    # reconnect (to another instance) spread out instead of all at once.
    drain_retry_ms: Annotated[int, Meta(ge=0)] = 2000
    # Time bounds of every connection, nginx's defaults (client_header_timeout,
    # client_body_timeout, keepalive_timeout): a slow mobile link gets a minute, a client that
    # dribbles or sits idle is let go after about one. Keep-alive outlives nginx's 60 s for its
    # idle upstream connections, so nginx closes them first and never reuses a closing one.
    header_timeout: Seconds = 60.0
    body_timeout: Seconds = 60.0
    keepalive_timeout: Seconds = 75.0
    # Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed: for a
    # connection from one of them the client is the last address of that header.
    trusted_proxies: tuple[str, ...] = ()


class BrokerSettings(Struct, forbid_unknown_fields=True, frozen=True):
    url: Annotated[str, Meta(pattern=r"^(memory|redis|rediss|unix)://")] = "memory://"
    key_prefix: str = "progress-relay:"
    timeout: Seconds = 2.0
    # Connections to Redis for requests; past them a request waits (up to `timeout`) for one.
    pool_size: Positive = 64
    # Each instance's open-stream counts (a snapshot's `subscribers`) stop counting this long
    # after the instance stopped refreshing them (it died); refreshed every third of it.
    instance_ttl: Lifetime = 15.0


class StreamSettings(Struct, forbid_unknown_fields=True, frozen=True):
    heartbeat: Seconds = 15.0
    retry_ms: Annotated[int, Meta(ge=0)] = 3000
    queue_frames: Positive = 1024
    queue_bytes: Positive = 1024 * 1024
    write_timeout: Seconds = 30.0


class JobSettings(Struct, forbid_unknown_fields=True, frozen=True):
    pending_ttl: Lifetime = 60.0
    idle_ttl: Lifetime = 3600.0
    finished_ttl: Lifetime = 300.0
    # The largest `ttl` a job may be created with (POST /v1/jobs); more is 422.
    max_ttl: Lifetime = 30 * 86400.0
    ring_events: Positive = 1000
    ring_bytes: Positive = 1024 * 1024
    log_tail: Positive = 20
    # Bytes of a job's streamed text (its `content` events joined) kept for its snapshot and
    # `reset`: the newest. 1 MiB holds a very long LLM answer (a 100,000-token one is about
    # 400 KB) and, beside the 1 MiB ring, bounds a job at about 2.25 MiB of history and text.
    content_bytes: Positive = 1024 * 1024
    max_jobs: Positive = 100_000
    # A publisher's idempotency key is remembered this long (and at most this many per job,
    # newest kept), so a retried publish returns the original ids instead of publishing again.
    idempotency_window: Lifetime = 300.0
    idempotency_keys: Positive = 10_000


class LimitSettings(Struct, forbid_unknown_fields=True, frozen=True):
    max_event_bytes: Positive = 64 * 1024
    max_batch_events: Positive = 1000
    max_request_bytes: Positive = 4 * 1024 * 1024
    max_stream_jobs: Positive = 100
    # Groups: children of one parent, and levels of a group counting the parent (2: a parent's
    # children may not have children of their own).
    max_children: Positive = 1000
    max_group_depth: Positive = 2
    # Open streams on this instance, of one job, and of one client address (an IPv6 client's
    # /64); past any of them a new stream gets 503.
    max_streams: Positive = 10_000
    max_streams_per_job: Positive = 1_000
    max_streams_per_client: Positive = 1_000
    # Publish requests per second per publisher token (per client address when publishing is
    # open), with bursts of up to `publish_burst`; past it 429.
    publish_rate: Annotated[float, Meta(gt=0)] = 1000.0
    publish_burst: Positive = 2000
    # The same for creating jobs (POST /v1/jobs), per publisher token or client address, and for
    # cancel requests (POST /v1/jobs/{id}/cancel), per client address.
    create_rate: Annotated[float, Meta(gt=0)] = 200.0
    create_burst: Positive = 400
    cancel_rate: Annotated[float, Meta(gt=0)] = 50.0
    cancel_burst: Positive = 100
    # Bytes that every job together may hold in this relay: history, log tails, idempotency keys,
    # meta and each job's own state (the memory broker; with Redis, Redis's `maxmemory` bounds
    # it). Past it the oldest finished jobs' history goes first, then publishes and creates get
    # 503 memory_full.
    memory_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 256 * 1024 * 1024
    # Levels of arrays and objects a JSON request body may nest; deeper is 400 json_too_deep.
    # At most 256: decoding recurses, and the stack must never be what refuses a body.
    max_json_depth: Annotated[int, Meta(ge=4, le=256)] = 64


class ReaperSettings(Struct, forbid_unknown_fields=True, frozen=True):
    interval: Seconds = 10.0


class AuthSettings(Struct, forbid_unknown_fields=True, frozen=True):
    # Bearer tokens of publishers; several, so one can be rotated in before the old one goes.
    # Empty: publishing is open (a sidecar reachable only by its backend).
    publish_tokens: tuple[str, ...] = ()
    # Open publishing on an address other than loopback lets anyone who reaches it publish,
    # delete and list jobs; `serve` refuses that unless this says it is meant.
    allow_open_publishing: bool = False
    subscribe: Literal["open", "token"] = "open"
    # HS256 key of subscriber tokens; needed for `subscribe = "token"` and to mint them.
    jwt_secret: str = ""
    token_ttl: Seconds = 3600.0
    cookie_name: str = "progress_relay_token"


class CorsSettings(Struct, forbid_unknown_fields=True, frozen=True):
    # Exact origins ("https://app.example.com") allowed to call the relay from a browser, with
    # credentials; "*" lets any other origin in without credentials.
    origins: tuple[str, ...] = ()
    max_age: Annotated[int, Meta(ge=0)] = 600


class DemoSettings(Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False
    # Multiplies every pause of the demo worker's flows (tests run them fast).
    speed: Annotated[float, Meta(gt=0)] = 1.0


class AdminSettings(Struct, forbid_unknown_fields=True, frozen=True):
    # The inspection page at /admin (it calls the API with the publisher token it is given).
    enabled: bool = False


class WebhookSettings(Struct, forbid_unknown_fields=True, frozen=True):
    # HMAC-SHA256 key of every delivery's `Webhook-Signature`; no delivery without it.
    secret: str = ""
    # A receiver for every job's events (a job's own `webhook` replaces it); "": none.
    url: str = ""
    # What a receiver gets unless the job asks otherwise: terminal events, also stage changes,
    # or every event.
    events: Literal["terminal", "stages", "all"] = "terminal"
    # Destinations a webhook may name: "https://host[:port]" (that scheme, host and port) or a
    # host pattern ("hooks.example.com", "*.example.com": any port, http or https). Empty: no
    # webhook is accepted (a job naming one gets 422 webhook_not_allowed).
    allowed: tuple[str, ...] = ()
    # Each attempt's bound. A failed attempt is retried with exponential backoff and jitter
    # (the first wait about `retry_delay`, none over `max_delay`) until `retry_for` after the
    # event was published; then the delivery has failed (counted and logged).
    timeout: Seconds = 10.0
    retry_for: Seconds = 3600.0
    retry_delay: Seconds = 1.0
    max_delay: Seconds = 300.0
    # Deliveries waiting at most; past it the oldest are dropped (and counted).
    outbox_size: Positive = 10_000
    # Deliveries in progress at once on this instance.
    concurrency: Positive = 8
    # With Redis: a delivery taken by an instance that has not finished it this long after (it
    # died) is taken over by another. Each instance renews its own while it works on them.
    claim_after: Seconds = 60.0


class LogSettings(Struct, forbid_unknown_fields=True, frozen=True):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(Struct, forbid_unknown_fields=True, frozen=True):
    server: ServerSettings = ServerSettings()
    broker: BrokerSettings = BrokerSettings()
    stream: StreamSettings = StreamSettings()
    jobs: JobSettings = JobSettings()
    limits: LimitSettings = LimitSettings()
    reaper: ReaperSettings = ReaperSettings()
    auth: AuthSettings = AuthSettings()
    cors: CorsSettings = CorsSettings()
    log: LogSettings = LogSettings()
    demo: DemoSettings = DemoSettings()
    admin: AdminSettings = AdminSettings()
    webhooks: WebhookSettings = WebhookSettings()

    def __post_init__(self) -> None:
        _check_webhooks(self.webhooks)
        auth = self.auth
        if auth.subscribe == "token" and len(auth.jwt_secret.encode()) < 32:
            raise ValueError(
                'auth.subscribe = "token" needs auth.jwt_secret of at least 32 bytes '
                "(HS256 keys shorter than the hash are guessable)"
            )
        if auth.jwt_secret and len(auth.jwt_secret.encode()) < 32:
            raise ValueError("auth.jwt_secret must be at least 32 bytes")
        if any(not token for token in auth.publish_tokens):
            raise ValueError("auth.publish_tokens must not contain an empty token")
        for proxy in self.server.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"server.trusted_proxies: {proxy!r} is not an IP address or network"
                ) from None
        # One publish lands in a subscriber's queue at once; a queue smaller than a batch
        # would drop even subscribers that keep up.
        if self.stream.queue_frames < self.limits.max_batch_events:
            raise ValueError(
                f"stream.queue_frames ({self.stream.queue_frames}) must be at least "
                f"limits.max_batch_events ({self.limits.max_batch_events})"
            )


def _check_webhooks(webhooks: WebhookSettings) -> None:
    # Imported here: the wire package imports this module.
    from progress_relay.wire.webhooks import destination_problem, pattern_problem, signing_key

    for pattern in webhooks.allowed:
        problem = pattern_problem(pattern)
        if problem:
            raise ValueError(f"webhooks.allowed: {pattern!r} {problem}")
    try:
        signing_key(webhooks.secret)
    except ValueError:
        raise ValueError("webhooks.secret: after `whsec_` it must be base64") from None
    if (webhooks.url or webhooks.allowed) and not webhooks.secret:
        raise ValueError("webhooks need webhooks.secret (the key their signatures are made with)")
    if webhooks.url:
        problem = destination_problem(webhooks.url, webhooks.allowed)
        if problem:
            raise ValueError(f"webhooks.url: {problem}")


class ConfigError(Exception):
    """Start-up stops with this; the message names the key and what was expected."""


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Only this machine can connect to ``host``: a loopback address or localhost's name. Any
    other name, and "" or 0.0.0.0 (every interface), may be reachable from the network."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """ConfigError when the relay would serve open publishing beyond this machine and the
    settings do not say that is meant (``auth.allow_open_publishing``)."""
    auth = settings.auth
    host = settings.server.host
    if auth.publish_tokens or auth.allow_open_publishing or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host or 'every interface'} with open publishing: anyone who "
        "can reach it could publish, delete and list jobs. Set auth.publish_tokens "
        "(PROGRESS_RELAY_AUTH_PUBLISH_TOKENS), or auth.allow_open_publishing = true "
        "(PROGRESS_RELAY_AUTH_ALLOW_OPEN_PUBLISHING=true) if that is meant"
    )


def _section_types() -> dict[str, type[Struct]]:
    hints = msgspec.structs.fields(Settings)
    return {f.name: f.type for f in hints}


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build Settings from a TOML file, the environment and explicit overrides (CLI flags)."""
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        raw = _read_toml(Path(path))
    _merge(raw, _from_environ(os.environ if environ is None else environ))
    if overrides:
        _merge(raw, {section: dict(values) for section, values in overrides.items()})
    try:
        # strict=False lets environment strings such as "15" become numbers.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_config_path(str(exc))}") from None


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: `{section}` must be a [section] table")
    return data


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    sections = _section_types()
    found: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            raise ConfigError(
                f"unknown environment variable {name}: expected "
                f"{ENV_PREFIX}<SECTION>_<KEY> with SECTION one of "
                f"{', '.join(s.upper() for s in sections)}"
            )
        if key not in _field_names(sections[section]):
            raise ConfigError(
                f"unknown environment variable {name}: [{section}] has no key `{key}`; "
                f"expected one of {', '.join(sorted(_field_names(sections[section])))}"
            )
        found.setdefault(section, {})[key] = _env_value(sections[section], key, value)
    return found


def _env_value(section: type[Struct], key: str, value: str) -> Any:
    """Lists come from the environment comma-separated: PROGRESS_RELAY_AUTH_PUBLISH_TOKENS=a,b."""
    field = next(f for f in msgspec.structs.fields(section) if f.name == key)
    if get_origin(field.type) is tuple:
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _field_names(section: type[Struct]) -> set[str]:
    return {f.name for f in msgspec.structs.fields(section)}


def _merge(into: dict[str, dict[str, Any]], other: Mapping[str, Mapping[str, Any]]) -> None:
    for section, values in other.items():
        into.setdefault(section, {}).update(values)


def _config_path(message: str) -> str:
    """msgspec says ``$.jobs.ring_events``; users write ``jobs.ring_events``."""
    return message.replace("`$.", "`").replace("`$`", "the top level")
