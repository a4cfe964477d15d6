"""The one place exchange errors become text: credentials and request signatures removed.

Why: ccxt puts the signed URL (``signature=...``), sometimes request headers
(``X-MBX-APIKEY``) and whatever the exchange echoes into its exception messages, and those
messages travel on into logs, the SQLite journal, Redis events and reports. Every path that
formats an exchange error calls ``one_line`` (or ``redact``); ``RedactingFilter`` on the log
handlers catches what is logged any other way (``log.exception`` tracebacks, ``%s`` args).
The credentials the executor reads from ``QT_API_KEY`` / ``QT_API_SECRET`` are hidden on every
call as well (values of at least ``MIN_ENV_SECRET_LEN`` characters), so a path that holds no keys
itself (the collector) still cannot print one an exchange echoes back.
Plain functions, no I/O apart from reading those two variables, importable from anywhere (ground
floor: no project imports).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

MASK = "***"
CREDENTIAL_ENV = ("QT_API_KEY", "QT_API_SECRET")
MIN_ENV_SECRET_LEN = 8  # a stray one-letter value must not mask every such letter
# signature=..., apiKey: "...", "X-MBX-APIKEY": '...', secret=... (query strings, JSON, header dicts);
# Bybit's v5 headers: "X-BAPI-API-KEY" (an api-key) and "X-BAPI-SIGN" (the request's signature)
_SENSITIVE = re.compile(
    r"""(signature|api[_-]?key|x-mbx-apikey|x-bapi-sign|secret)(['"]?\s*[:=]\s*['"]?)([^&'"\s,}]+)""",
    re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every non-empty secret and every signature/key-looking value replaced by ``***``."""
    env = (os.environ.get(name, "") for name in CREDENTIAL_ENV)
    hidden = {s for s in secrets if s} | {s for s in env if len(s) >= MIN_ENV_SECRET_LEN}
    for s in sorted(hidden, key=len, reverse=True):
        text = text.replace(s, MASK)
    return _SENSITIVE.sub(rf"\1\2{MASK}", text)


def one_line(exc: BaseException, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """``ClassName: message`` on one line, redacted, at most ``limit`` characters."""
    text = redact(" ".join(f"{type(exc).__name__}: {exc}".split()), secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RedactingFilter(logging.Filter):
    """Redacts a record's final message and its traceback before any handler formats it."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install_log_redaction(secrets: Iterable[str] = (), logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one ``RedactingFilter`` on every handler of ``logger`` (the root logger by default)."""
    f = RedactingFilter(secrets)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(f)
    return f


def remove_log_redaction(f: RedactingFilter, logger: logging.Logger | None = None) -> None:
    """Undo ``install_log_redaction`` (a daemon run inside a longer-lived process, e.g. tests)."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.removeFilter(f)
