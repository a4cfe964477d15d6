"""Retry arithmetic and the one retry loop for reads.

``backoff_delay_s`` is pure (the random draw comes from the ``rng`` passed in), so a
table of (attempt, base, cap) -> bounds can be checked without sleeping. ``retry_call``
is the loop around it; it sleeps through the injected ``sleep`` so tests and callers
control time. Only reads go through it: an order is never re-sent (see ``qt.errors``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def backoff_ceiling_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Upper bound of the wait before retry number ``attempt`` (1 = first retry):
    ``min(cap_s, base_s * 2**(attempt-1))``. Pure; ValueError on a nonsensical input."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if base_s <= 0 or cap_s < base_s:
        raise ValueError(f"need 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
    # 2**attempt overflows float for huge attempts; the cap is reached long before.
    exponent = min(attempt - 1, 64)
    return min(cap_s, base_s * (2.0 ** exponent))


def backoff_delay_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in ``[0, backoff_ceiling_s(...)]``.

    Full jitter (not "ceiling +- a bit") spreads many clients that failed together
    (a 429 wave hits every worker at once) so they do not retry in lock step.
    """
    return rng.uniform(0.0, backoff_ceiling_s(attempt, base_s, cap_s))


def wait_before_retry_s(attempt: int, base_s: float, cap_s: float, rng: random.Random,
                        retry_after_s: float | None) -> float:
    """The wait actually used: the jittered backoff, but never shorter than a server's
    ``Retry-After`` (the server knows when its limit window ends; retrying earlier
    only earns another 429, and on Binance repeated 429s escalate to an IP ban, 418)."""
    delay = backoff_delay_s(attempt, base_s, cap_s, rng)
    if retry_after_s is not None and retry_after_s > delay:
        return float(retry_after_s)
    return delay


def retry_call(fn: Callable[[], T], *, is_retryable: Callable[[BaseException], bool], max_attempts: int,
               base_s: float, cap_s: float, sleep: Callable[[float], None], rng: random.Random,
               retry_after_s: Callable[[BaseException], float | None] | None = None,
               on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """Call ``fn`` until it returns, at most ``max_attempts`` times in all.

    A non-retryable error propagates at once. After the last attempt the last retryable
    error propagates unchanged (the caller turns it into ``RetryableError`` with context).
    ``on_retry(attempt, error, wait_s)`` is called before each wait (count, log).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified right below, re-raised if not retryable
            if not is_retryable(exc) or attempt >= max_attempts:
                raise
            hint = retry_after_s(exc) if retry_after_s is not None else None
            wait_s = wait_before_retry_s(attempt, base_s, cap_s, rng, hint)
            if on_retry is not None:
                on_retry(attempt, exc, wait_s)
            sleep(wait_s)
            attempt += 1


def parse_retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header value (delta-seconds form); None when absent or
    not a non-negative number (the HTTP-date form is not used by Binance)."""
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
