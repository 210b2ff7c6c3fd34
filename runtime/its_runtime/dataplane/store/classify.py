"""Why a write failed: the database is away (an outage) or the rows are wrong (bad data).

The row writer does opposite things in the two cases, so it must tell them apart:

* **Outage** (``OUTAGE``): the server cannot take writes now (connection refused or
  lost, a timeout, the server shutting down, out of disk or connections, a lock or
  serialization conflict, a schema or permission problem that an operator fixes).
  Retrying the same rows later will work, so they are journalled and replayed.
* **Bad data** (``BAD_DATA``): the rows themselves are refused, and retrying them can
  never work: SQLSTATE classes 22 (data exception: a NUL byte in text, a value out
  of range), 23 (a constraint violation) and 54 (a value too large for an index),
  and the errors raised on *this* side while encoding a row (asyncpg's client-side
  ``DataError`` is a ``ValueError``; a ``NaN`` time fails to become a datetime).
  The batch is split until the bad rows are isolated; they go to the dead letters.
* **Unknown** (``UNKNOWN``): anything else. The writer logs it with its traceback,
  asks the database whether it still answers, and then treats it as an outage (it
  does not) or as bad data (it does): either way no batch is retried forever and
  the writer goes on.

:func:`describe` is the one text an error is shown as (logs, ``/ready``, dead
letters): its type and message, with any ``user:password@`` removed.
"""

from __future__ import annotations

import enum

import asyncpg

from its_runtime import redaction


class Failure(enum.Enum):
    OUTAGE = "outage"
    BAD_DATA = "bad_data"
    UNKNOWN = "unknown"


#: SQLSTATE classes of errors that a retry later can fix (the server, not the rows).
_OUTAGE_CLASSES = frozenset(
    {
        "08",  # connection exception
        "25",  # invalid transaction state (a connection left mid-transaction)
        "40",  # transaction rollback: serialization failure, deadlock
        "42",  # undefined table/column, insufficient privilege: fixed by an operator
        "53",  # insufficient resources: disk full, out of memory, too many connections
        "55",  # object not in prerequisite state: lock not available
        "57",  # operator intervention: shutdown, statement timeout, cannot connect now
        "58",  # system error (I/O)
        "F0",  # configuration file error
        "XX",  # internal error
    }
)
#: SQLSTATE classes of errors that the rows cause (retrying them can never work).
_BAD_DATA_CLASSES = frozenset({"22", "23", "54"})


def classify(exc: BaseException) -> Failure:
    """Outage, bad data or unknown (see the module docstring)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")[:2]
        if state in _BAD_DATA_CLASSES:
            return Failure.BAD_DATA
        if state in _OUTAGE_CLASSES:
            return Failure.OUTAGE
        return Failure.UNKNOWN
    # Before InterfaceError: asyncpg's client-side DataError is both (a ValueError).
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return Failure.BAD_DATA
    if isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError):
        return Failure.OUTAGE
    return Failure.UNKNOWN


def reason(exc: BaseException) -> str:
    """A short, bounded label for metrics: the exception's type name."""
    return type(exc).__name__


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message``, credentials removed, at most ``limit`` characters."""
    return redaction.redact(f"{type(exc).__name__}: {exc}")[:limit]
