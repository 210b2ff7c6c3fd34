"""Does a live object still hold what the operator applied? Answered without writing.

The API server adds defaults (``protocol: TCP``, ``terminationMessagePath``, ...) and
re-spells quantities ("1024Mi" -> "1Gi", "12500m" -> "12.5"), so equality is the
wrong test: the desired object must be *contained* in the live one. Empty values the
server drops (``{}``, ``[]``, ``""``, ``None``) count as absent; lists must match
element by element (a removed env var is a change). Fields removed from the desired
object are caught by the desired-hash annotation, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from its_operator.api import quantities


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def difference(live: Any, desired: Any, path: str = "") -> str | None:
    """The path of the first desired value the live object lacks, or None if contained."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return path or "."
        for key, want in desired.items():
            sub = f"{path}.{key}"
            if key not in live:
                if _empty(want):
                    continue
                return sub
            found = difference(live[key], want, sub)
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for i, (have, want) in enumerate(zip(live, desired, strict=True)):
            found = difference(have, want, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if live == desired and type(live) is not bool and type(desired) is not bool:
        return None
    if isinstance(live, bool) or isinstance(desired, bool):
        return None if live is desired else path
    if isinstance(live, str) and isinstance(desired, str) and quantities.same(live, desired):
        return None
    return path
