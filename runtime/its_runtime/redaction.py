"""Credentials out of every text the project emits: logs, status, API answers, Events.

Camera URLs carry credentials (``rtsp://user:password@camera/stream``), and FFmpeg
puts the URL it failed on into its error text (``Connection refused:
'rtsp://user:password@...'``), which would otherwise reach a log line, a camera's
``last_error`` in ``/ready`` and ``/v1/cameras/{id}/latest`` (served without
authentication), or a status condition. Rather than trusting each call site, the
texts pass one of two filters here:

* :func:`redact` replaces the userinfo of any ``scheme://userinfo@`` in a text with
  ``***`` (percent-encoded or not; a raw ``@`` inside the password too, the last ``@``
  before the host ends the userinfo), and masks every secret :func:`remember` was told
  about, so a password printed without its URL around it is hidden as well;
* :class:`LogFilter` does the same to log records (message, arguments, exception and
  stack text); :func:`install` puts it on every handler of the root logger, since a
  filter on the root *logger* never sees records propagated from child loggers, and
  routes uncaught thread exceptions through logging so they are filtered too.

It is a floor module (standard library only): the runtime's layers and the operator
(which imports the shared config format) both use it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import types
from urllib.parse import unquote, urlsplit

MASK = "***"

#: ``scheme://userinfo@``: userinfo runs to the last ``@`` before a ``/``, ``?``, ``#``,
#: whitespace or a quote ends the authority.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s'\"<>]*)@")

#: Secrets learnt from resolved URLs (passwords, as written and decoded); replaced as a
#: whole (an immutable tuple, so readers on other threads need no lock).
_known: tuple[str, ...] = ()
_known_lock = threading.Lock()
#: Shorter secrets are not masked on their own (they would mask ordinary words, like a
#: password "postgres" would every DSN's scheme); inside a URL they are masked anyway.
MIN_SECRET_LEN = 8


def redact(text: str) -> str:
    """``text`` with URL credentials and remembered secrets replaced by ``***``."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    for secret in _known:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)


def remember(url: str) -> None:
    """Mask the credentials of ``url`` wherever they appear from now on, URL or not."""
    global _known
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    found = {p for p in (parts.password,) if p}
    found |= {unquote(p) for p in found}
    if parts.username and parts.password:
        found.add(f"{parts.username}:{parts.password}")
    found = {s for s in found if len(s) >= MIN_SECRET_LEN}
    if not found:
        return
    with _known_lock:
        # Longest first, so a secret containing another is masked whole.
        _known = tuple(sorted(set(_known) | found, key=len, reverse=True))


class LogFilter(logging.Filter):
    """Redacts a record in place before any handler formats it."""

    def __init__(self) -> None:
        super().__init__("its-redaction")
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error path
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(root: logging.Logger | None = None, *, hooks: bool = True) -> LogFilter:
    """Put one :class:`LogFilter` on every handler of ``root`` (the root logger), and
    (``hooks``) send uncaught exceptions of threads and of the process through logging."""
    logger = root or logging.getLogger()
    log_filter = LogFilter()
    for handler in logger.handlers:
        if not any(isinstance(f, LogFilter) for f in handler.filters):
            handler.addFilter(log_filter)
    if not hooks:
        return log_filter

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.error(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    def process_hook(
        exc_type: type[BaseException],
        exc: BaseException,
        tb: types.TracebackType | None,
    ) -> None:
        logger.critical("uncaught exception", exc_info=(exc_type, exc, tb))

    threading.excepthook = thread_hook
    sys.excepthook = process_hook
    return log_filter
