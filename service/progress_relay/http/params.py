"""Reading path and query parameters; every bad one is a 400 that names it."""

from __future__ import annotations

import re

from aiohttp import web

from progress_relay.wire.errors import InvalidJobId, InvalidParameter
from progress_relay.wire.ids import is_valid_job_id


def job_id(request: web.Request) -> str:
    return check_job_id(request.match_info["job_id"])


def check_job_id(value: str, where: str = "path") -> str:
    if not is_valid_job_id(value):
        raise InvalidJobId(
            f"invalid job id {shown(value)} in {where}: 1-128 characters of A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit"
        )
    return value


# What an error message shows of a value it refuses: enough to recognise it, never a flood.
_SHOWN = 64
# Digits an integer parameter may have: the bounds of every one fit, and int() of more digits
# is work (and past 4,300 an error) for nothing.
_INT = re.compile(r"-?[0-9]{1,18}")


def shown(value: str) -> str:
    """``value`` quoted for an error message, cut short when long."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if _INT.fullmatch(raw) is None:
        raise InvalidParameter(
            f"`{name}` must be an integer between {low} and {high}, got {shown(raw)}"
        )
    value = int(raw)
    if not low <= value <= high:
        raise InvalidParameter(f"`{name}` must be between {low} and {high}, got {value}")
    return value


def choice_param(request: web.Request, name: str, choices: tuple[str, ...]) -> str:
    value = request.query.get(name, choices[0])
    if value not in choices:
        raise InvalidParameter(f"`{name}` must be one of {', '.join(choices)}; got {shown(value)}")
    return value
