"""Pure planning of a collection: which open-time ranges to ask for, and where the gaps are.

Why a module of its own: these are the collector's decisions (never download stored history
again, never store the still-open candle, ask once per gap), written as pure functions of
integers so they are tested without an exchange or a lake.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt.timeframes import utc_timestamp


def align_up_ms(ts_ms: int, step_ms: int) -> int:
    """The first grid time (multiple of ``step_ms``) at or after ``ts_ms``."""
    return -(-ts_ms // step_ms) * step_ms


def closed_end_ms(server_now_ms: int, step_ms: int) -> int:
    """Exclusive bound on open times of closed candles: the open time of the candle in
    progress at ``server_now_ms`` (a candle opened at t is closed when t + step <= now)."""
    return (server_now_ms // step_ms) * step_ms


def plan_fetch_ranges(start_ms: int, end_ms: int, stored_first_ms: int | None, stored_last_ms: int | None,
                      step_ms: int, history_checked_from_ms: int | None) -> list[tuple[int, int]]:
    """``[lo, hi)`` open-time ranges to request, oldest first; never one already stored.

    Nothing stored: ``[start, end)``. Stored: the tail after the newest candle, and the head
    before the oldest when ``start`` is earlier than both the oldest candle and any start
    already asked for (``history_checked_from_ms``: before a listing there is nothing to get,
    and asking again every run would re-download the first page each time).
    """
    if start_ms >= end_ms:
        return []
    if stored_last_ms is None or stored_first_ms is None:
        return [(start_ms, end_ms)]
    ranges = []
    already_asked = history_checked_from_ms is not None and history_checked_from_ms <= start_ms
    if start_ms < stored_first_ms and not already_asked:
        ranges.append((start_ms, min(stored_first_ms, end_ms)))
    tail_lo = max(stored_last_ms + step_ms, start_ms)
    if tail_lo < end_ms:
        ranges.append((tail_lo, end_ms))
    return ranges


def find_gaps(ts_ms: np.ndarray, step_ms: int) -> list[tuple[int, int]]:
    """Missing grid times inside a sorted open-time array, as ``[lo, hi)`` ranges."""
    if len(ts_ms) < 2:
        return []
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    jumps = np.nonzero(np.diff(ts_ms) > step_ms)[0]
    return [(int(ts_ms[i]) + step_ms, int(ts_ms[i + 1])) for i in jumps]


def subtract_known(gaps: list[tuple[int, int]], known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Gaps not inside any known (already recorded unfillable) range."""
    return [g for g in gaps if not any(k_lo <= g[0] and g[1] <= k_hi for k_lo, k_hi in known)]


def gap_record(lo: int, hi: int, step: int) -> dict:
    """One unfillable gap as ``state.json`` records it."""
    return {"start_ms": lo, "end_ms": hi, "missing_bars": (hi - lo) // step,
            "start": pd.Timestamp(lo, unit="ms", tz="UTC").isoformat(),
            "end": pd.Timestamp(hi, unit="ms", tz="UTC").isoformat()}


def to_ms(value) -> int:
    """A user's date (``YYYY-MM-DD``, ISO, Timestamp) as UTC epoch milliseconds."""
    return int(utc_timestamp(value).value // 1_000_000)


def ts_ms(ts: pd.Timestamp | None) -> int | None:
    return None if ts is None else int(ts.value // 1_000_000)
