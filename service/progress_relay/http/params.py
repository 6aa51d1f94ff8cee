"""Reading path and query parameters; every bad one is a 400 that names it."""

from __future__ import annotations

from aiohttp import web

from progress_relay.wire.errors import InvalidJobId, InvalidParameter
from progress_relay.wire.ids import is_valid_job_id


def job_id(request: web.Request) -> str:
    return check_job_id(request.match_info["job_id"])


def check_job_id(value: str, where: str = "path") -> str:
    if not is_valid_job_id(value):
        raise InvalidJobId(
            f"invalid job id {value!r} in {where}: 1-128 characters of A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit"
        )
    return value


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"`{name}` must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidParameter(f"`{name}` must be between {low} and {high}, got {value}")
    return value


def choice_param(request: web.Request, name: str, choices: tuple[str, ...]) -> str:
    value = request.query.get(name, choices[0])
    if value not in choices:
        raise InvalidParameter(f"`{name}` must be one of {', '.join(choices)}; got {value!r}")
    return value
