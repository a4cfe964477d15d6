"""The collector's requests to the exchange: retried with backoff, ccxt errors turned into ours.

Why a module of its own: every read the collector makes (markets, clock, candles, funding, open
interest, tickers) goes through ``ExchangeCalls.call``, so retry policy, retry counting and the
one-line error a user sees are decided once. Which ccxt errors are transient and how their text
is made safe to print are not decided here: ``qt.binance`` classifies (the same rules as the
live broker) and ``qt.redact`` formats and removes secrets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import ccxt

from data.collector.reports import SymbolReport
from qt.backoff import parse_retry_after_s, retry_call
from qt.binance import is_lost_answer, reason_for
from qt.config import CollectParams
from qt.errors import DataError, QTError, RetryableError, UserError
from qt.redact import one_line


class ExchangeCalls:
    """Retried reads for one symbol: counts retries into the report, converts ccxt errors."""

    def __init__(self, exchange: ccxt.Exchange, symbol: str, params: CollectParams, report: SymbolReport,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.exchange = exchange
        self.symbol = symbol
        self.params = params
        self.report = report
        self.sleep = sleep
        self.rng = rng or random.Random()

    def call(self, what: str, fn: Callable[[], object]):
        def on_retry(attempt: int, exc: BaseException, wait_s: float) -> None:
            self.report.retries += 1

        try:
            return retry_call(fn, is_retryable=is_retryable, max_attempts=self.params.max_attempts,
                              base_s=self.params.backoff_base_s, cap_s=self.params.backoff_cap_s,
                              sleep=self.sleep, rng=self.rng, retry_after_s=retry_after_s, on_retry=on_retry)
        except ccxt.BaseError as exc:
            raise convert(exc, self.symbol, what, self.params.max_attempts, self.exchange.id) from None


def _http_response(exc: BaseException):
    """The ``requests`` response behind a ccxt error (ccxt raises inside ``except HTTPError``)."""
    seen = 0
    node: BaseException | None = exc
    while node is not None and seen < 5:
        response = getattr(node, "response", None)
        if response is not None and hasattr(response, "status_code"):
            return response
        node = node.__cause__ or node.__context__
        seen += 1
    return None


def http_status(exc: BaseException) -> int | None:
    response = _http_response(exc)
    return int(response.status_code) if response is not None else None


def is_retryable(exc: BaseException) -> bool:
    """A lost answer (``qt.binance.is_lost_answer``: timeouts, 5xx, 429, dropped connections)
    that is not a 404: ccxt maps 404 to ExchangeNotAvailable, but on Binance a 404 is a path the
    server does not serve, and asking again cannot help."""
    return is_lost_answer(exc) and http_status(exc) != 404


def retry_after_s(exc: BaseException) -> float | None:
    response = _http_response(exc)
    return parse_retry_after_s(response.headers.get("Retry-After")) if response is not None else None


def typed_line(exc: BaseException, limit: int = 200) -> str:
    """``ClassName: message`` on one line, redacted, the message cut at ``limit`` characters."""
    return one_line(exc, limit=len(type(exc).__name__) + 2 + limit)


def message_line(exc: BaseException, limit: int = 200) -> str:
    """The redacted one-line message alone (our own errors already name what failed)."""
    return one_line(exc, limit=len(type(exc).__name__) + 2 + limit)[len(type(exc).__name__) + 2:]


def convert(exc: ccxt.BaseError, symbol: str, what: str, attempts: int, exchange_id: str) -> QTError:
    """A ccxt error as the project's error: retryable, unknown symbol, credentials, or refused."""
    if is_retryable(exc):
        return RetryableError(f"{symbol}: {what} on {exchange_id} still failing after {attempts} attempts "
                              f"({typed_line(exc)}); re-run later, it resumes where it stopped")
    reason = reason_for(exc)
    if reason == "BAD_SYMBOL":
        return DataError(f"{symbol}: unknown on {exchange_id}; check --symbols")
    if reason in ("AUTHENTICATION", "PERMISSION_DENIED"):  # ccxt.AuthenticationError and its subclasses
        return UserError(f"{symbol}: {exchange_id} refused the credentials ({message_line(exc)}); check the API key")
    status = http_status(exc)
    where = f"HTTP {status} " if status is not None else ""
    return DataError(f"{symbol}: {what} on {exchange_id} refused: {where}{typed_line(exc)}")
