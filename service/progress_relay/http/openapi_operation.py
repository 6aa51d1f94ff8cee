"""What a handler tells the OpenAPI document, written beside it: ``@Operation(...)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from msgspec import Struct

from progress_relay.config import Settings
from progress_relay.wire.errors import RelayError

Schema = dict[str, Any]
# A body: a Struct, as JSON; or (media type, schema) for anything else.
Body = type[Struct] | tuple[str, Schema]
# Who may call it; each side's credentials, and their errors, follow from the settings. Checked
# before anything else about a request (http/access.py); "operator": listing and deleting jobs.
Access = Literal["publisher", "subscriber", "operator", "public"]
# A parameter; a function of the settings when it names a limit.
Parameter = Schema | Callable[[Settings], Schema]

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True, slots=True)
class Operation:
    """Decorates a handler with its documentation. ``responses``: status -> (description,
    body or None); ``errors``: the errors it can answer with besides its credentials'."""

    id: str
    summary: str
    access: Access
    responses: Mapping[int, tuple[str, Body | None]]
    errors: Sequence[type[RelayError]] = ()
    description: str | None = None
    parameters: Sequence[Parameter] = ()
    request: Body | None = None
    request_required: bool = False

    def __call__(self, handler: _Handler) -> _Handler:
        OPERATIONS[handler] = self
        return handler


OPERATIONS: dict[Callable[..., Any], Operation] = {}
