"""Credentials: publisher bearer tokens and subscriber JWTs.

Publishers (the backend) hold one of ``auth.publish_tokens``; when any is configured, creating,
publishing, deleting and listing jobs need it. Subscribers (browsers) hold an HS256 JWT whose
``jobs`` claim lists the job ids it may read (or is ``"*"``); with ``auth.subscribe = "token"``
every read of a job and its cancel need one. A publisher token is accepted wherever a subscriber
token is: the backend may read what it publishes. Listing and deleting jobs (``operator``) need
a publisher token when any is configured; with open publishing and subscriber tokens on, a
subscriber token for every job (``"*"``): a viewer's token for its own job lists and deletes
nothing.

Which of these a route needs is its ``@Operation``'s ``access``, checked by http/access.py
before anything else about the request. Tokens never appear in an error message or a log line;
a credential that is not even text (bytes that are not UTF-8) is as invalid as a wrong one.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable

import jwt
from aiohttp import web

from progress_relay.config import AuthSettings
from progress_relay.wire.errors import Forbidden, Unauthorized

_ALGORITHM = "HS256"


class Credentials:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._publish_tokens = [token.encode() for token in settings.publish_tokens]
        self._secret = settings.jwt_secret

    @property
    def can_mint(self) -> bool:
        return bool(self._secret)

    def mint(self, job_ids: list[str] | str, ttl: float | None = None) -> str:
        """A subscriber token for these jobs (or ``"*"``), valid for ``ttl`` seconds."""
        now = int(time.time())
        lifetime = int(ttl if ttl is not None else self.settings.token_ttl)
        claims = {"jobs": job_ids, "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def require_publisher(self, request: web.Request) -> str:
        """Who is publishing, for rate limits: which configured token (never the token itself),
        or the client's address when publishing is open."""
        if not self._publish_tokens:
            return f"address {request.remote}"
        token = _bearer(request)
        if token is None:
            raise Unauthorized(
                "this relay needs a publisher token: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="publish"'},
            )
        which = self._publisher_index(token)
        if which is None:
            raise Unauthorized(
                "the publisher token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="publish", error="invalid_token"'},
            )
        return f"publisher token {which}"

    def require_operator(self, request: web.Request) -> None:
        """Listing and deleting jobs: see the module's docstring."""
        if self._publish_tokens:
            self.require_publisher(request)
        elif self.settings.subscribe == "token":
            self.require_subscriber(request, None)

    def require_subscriber(self, request: web.Request, job_ids: Iterable[str] | None) -> None:
        """A credential that may read ``job_ids`` (None: every job, ``"*"``)."""
        if self.settings.subscribe == "open":
            return
        bearer = _bearer(request)
        if bearer is not None and self._publisher_index(bearer) is not None:
            return
        token = (
            request.query.get("token") or bearer or request.cookies.get(self.settings.cookie_name)
        )
        if not token:
            raise Unauthorized(
                "this stream needs a subscriber token: ?token=, Authorization: Bearer, or the "
                f"{self.settings.cookie_name} cookie",
                headers={"WWW-Authenticate": 'Bearer realm="subscribe"'},
            )
        self.check_subscriber_token(token, job_ids)

    def check_subscriber_token(self, token: str, job_ids: Iterable[str] | None) -> None:
        """Raises Unauthorized for a token that is not ours or has expired, Forbidden for one
        that does not grant every job of ``job_ids`` (None: that is not ``"*"``)."""
        if not token.isascii():  # a JWT is ASCII; undecodable bytes arrive as surrogates
            raise Unauthorized("the subscriber token is not valid")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], options={"require": ["exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the subscriber token has expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the subscriber token is not valid") from None
        granted = claims.get("jobs")
        if granted == "*":
            return
        if not isinstance(granted, list):
            raise Unauthorized("the subscriber token has no `jobs` claim")
        if job_ids is None:
            raise Forbidden(
                'listing and deleting jobs needs a subscriber token for every job (jobs: "*") '
                "or a publisher token"
            )
        for job_id in job_ids:
            if job_id not in granted:
                raise Forbidden(f"the subscriber token does not grant job {job_id}")

    def _publisher_index(self, token: str) -> int | None:
        # surrogateescape: bytes that were not UTF-8 compare as they came, and match nothing.
        candidate = token.encode("utf-8", "surrogateescape")
        # Every configured token is compared, in constant time each: no early exit to time.
        matches = [hmac.compare_digest(candidate, known) for known in self._publish_tokens]
        return matches.index(True) if any(matches) else None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
