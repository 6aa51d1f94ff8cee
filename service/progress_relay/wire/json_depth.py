"""How deep a JSON body nests, checked before it is decoded.

Decoding JSON recurses once per level of arrays and objects, and so does everything that later
walks the value (encoding a snapshot, reading it back from Redis). A body nested past what the
interpreter's stack allows would fail somewhere, at a depth that depends on the call site; a
fixed, low limit refuses it at the edge instead, the same way everywhere.

The check works on the bytes at C speed, with no work per string: escapes that could hide a
quote are removed (``\\\\`` pairs first, then ``\\"``), everything but brackets and quotes is
dropped, what lies between quotes is dropped (a bracket inside a string does not nest), and the
running depth is summed with ``itertools.accumulate``, stopping at the first level past the
limit. A body with no more brackets than the limit cannot be too deep and is not scanned at
all. The body need not be valid JSON: the decoder judges that afterwards.
"""

from __future__ import annotations

import itertools
from array import array

from progress_relay.wire.errors import JsonTooDeep

_NOT_BRACKETS_OR_QUOTES = bytes(sorted(set(range(256)) - set(b'[]{}"')))
# Each bracket as a signed step of the depth: +1 opens, -1 (0xff) closes.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether arrays and objects in ``body`` nest more than ``limit`` levels deep."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(None, _NOT_BRACKETS_OR_QUOTES)
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[::2])  # the odd pieces were inside strings
    steps = array("b", kept.translate(_STEPS))
    return any(map(limit.__lt__, itertools.accumulate(steps)))


def check_nesting(body: bytes, limit: int) -> None:
    """400 ``json_too_deep`` for a request body nested past ``limit``."""
    if nesting_exceeds(body, limit):
        raise JsonTooDeep(
            f"the request body nests arrays and objects more than {limit} levels deep "
            "(limits.max_json_depth)"
        )
