"""Kubernetes resource quantities ("20Gi", "500m", "1e3") as exact numbers.

The operator needs them twice: to size the runtime's engine cache from the PVC size,
and to tell a real change from the API server's canonical re-spelling ("1024Mi" is
stored as "1Gi"), so that an unchanged child is never written again. Decimal keeps
both exact; the grammar is the one in ``spec_fields.QUANTITY_PATTERN``.
"""

from __future__ import annotations

import decimal
import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "": decimal.Decimal(1),
    "k": decimal.Decimal("1e3"),
    "M": decimal.Decimal("1e6"),
    "G": decimal.Decimal("1e9"),
    "T": decimal.Decimal("1e12"),
    "P": decimal.Decimal("1e15"),
    "E": decimal.Decimal("1e18"),
}
_RE = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"  # number
    r"([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$"  # exponent or suffix
)


def parse(text: str | int | float) -> decimal.Decimal:
    """The value of a quantity; ValueError names the text when it is not one."""
    if isinstance(text, bool):
        raise ValueError(f"not a quantity: {text!r}")
    if isinstance(text, int | float):
        return decimal.Decimal(str(text))
    m = _RE.match(text.strip())
    if m is None:
        raise ValueError(f"not a quantity: {text!r}")
    # Exact, whatever the API server admitted: enough digits for the longest number
    # the schema allows (64 characters) times 2**60, and any int32 exponent (what
    # resource.ParseQuantity reads); past that, a ValueError rather than an
    # ArithmeticError escaping (".1E1000000" overflowed the default context).
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 100, decimal.MAX_EMAX, decimal.MIN_EMIN
        ctx.traps[decimal.Inexact] = True
        try:
            number, suffix = decimal.Decimal(m.group(1)), m.group(2) or ""
            if suffix in _BINARY:
                return number * _BINARY[suffix]
            if suffix in _DECIMAL:
                return number * _DECIMAL[suffix]
            return number.scaleb(int(suffix[1:]))
        except ArithmeticError as exc:
            raise ValueError(f"quantity out of range: {text!r}") from exc


def same(a: object, b: object) -> bool:
    """Whether two values are the same quantity (both must parse)."""
    if not isinstance(a, str | int) or not isinstance(b, str | int):
        return False
    try:
        return parse(a) == parse(b)
    except ValueError:
        return False
