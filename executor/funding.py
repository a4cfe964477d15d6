"""Funding of perpetual futures: the schedule, its coverage check and the pure settlement rule.

A perpetual position (ccxt symbol with ``:``, e.g. ``BTC/USDT:USDT``) that is open at a
funding time ``F`` pays ``rate * signed qty * mark`` in USDT: with a positive rate longs pay and
shorts receive, with a negative rate the reverse.
Spot symbols never pay funding. The backtest, the paper replay and buy-and-hold all settle
funding with the functions here, so their PnL agrees (backtest/paper parity).

Settlement rule (bar open times, UTC):

* The event at ``F`` is booked at the first bar the loop steps with open time ``>= F``,
  BEFORE that bar's orders fill at its open. So a position exiting at the open of the
  08:00 bar still pays the 08:00 funding (it was held into 08:00; a real market order
  decided at the 07:00 close executes just after 08:00), and an entry filling at the
  08:00 open does not.
* Mark price = the close of the symbol's last bar that opened before ``F``. With bars that
  divide the 8 h funding grid (1m .. 8h) that close is the last traded price before ``F``;
  it is always known when the event is booked (no look-ahead), it does not depend on the
  bar at ``F`` existing (exchange gaps), and it is the same mark the loop's equity uses.
  With longer bars (1d) the mark is the close of the bar containing ``F`` - an accepted
  approximation, as is the assumption that an intrabar stop/take-profit in that bar came
  before ``F``.
* Events after the last bar stepped are not charged (they have not happened in the run).

Funding timestamps are floored to the second: exchanges stamp funding a few ms after the
hour, which must not push the event to the next bar.

No silent zero: a perp symbol without funding rows, or whose funding history has a hole
longer than ``MAX_FUNDING_INTERVAL`` inside the traded span, is a ``DataError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qt.errors import DataError

FUNDING_FRAME_COLUMNS = ["symbol", "timestamp", "funding_rate"]
PAYMENT_COLUMNS = ["symbol", "funding_ts", "timestamp", "rate", "qty", "mark_price", "notional_usdt", "amount_usdt"]
# Binance's longest funding interval; a longer hole in the history would hide payments.
MAX_FUNDING_INTERVAL = pd.Timedelta(hours=8)


def is_perp(symbol: str) -> bool:
    """ccxt unified symbols of derivatives carry the settle currency after ``:``."""
    return ":" in symbol


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """One funding settlement of one position (a ledger row beside the fills)."""

    symbol: str
    funding_ts: pd.Timestamp  # the funding time F
    timestamp: pd.Timestamp  # open time of the bar it was booked in (first bar open >= F)
    rate: float  # fraction per funding interval
    qty: float  # position held at F (base units, signed: long > 0, short < 0)
    mark_price: float  # close of the last bar that opened before F
    notional_usdt: float  # qty * mark_price
    amount_usdt: float  # paid (+) or received (-): rate * notional_usdt


def _missing(symbol: str) -> DataError:
    spot = symbol.split(":")[0]
    return DataError(f"funding history missing for {symbol}; collect funding (collect.funding: true, then "
                     f"`qt collect`) and pass it to the backtest/replay, or trade the spot symbol {spot}")


class FundingSchedule:
    """Funding events per perp symbol, from a ``symbol, timestamp, funding_rate`` frame."""

    def __init__(self, frame: pd.DataFrame):
        missing = set(FUNDING_FRAME_COLUMNS) - set(frame.columns)
        if missing:
            raise DataError(f"funding frame lacks columns {sorted(missing)}; expected {FUNDING_FRAME_COLUMNS}")
        df = frame[FUNDING_FRAME_COLUMNS].copy()
        spot = sorted({str(s) for s in df["symbol"].unique() if not is_perp(str(s))})
        if spot:
            raise DataError(f"funding rows for spot symbols {spot}; funding exists for perpetuals "
                            f"(BASE/USDT:USDT) only - drop those rows")
        rates = pd.to_numeric(df["funding_rate"], errors="coerce")
        if rates.isna().any():
            bad = df.loc[rates.isna()].iloc[0]
            raise DataError(f"funding rate missing/non-numeric for {bad['symbol']} at {bad['timestamp']}; "
                            f"re-collect funding for that symbol")
        ts = pd.to_datetime(df["timestamp"], utc=True).dt.floor("s")
        df = df.assign(timestamp=ts, funding_rate=rates.astype("float64")).drop_duplicates()
        dup = df.duplicated(["symbol", "timestamp"], keep=False)
        if dup.any():
            bad = df.loc[dup].iloc[0]
            raise DataError(f"two different funding rates for {bad['symbol']} at {bad['timestamp']}; "
                            f"repair the funding history")
        self._ts: dict[str, np.ndarray] = {}
        self._rate: dict[str, np.ndarray] = {}
        for sym, g in df.sort_values(["symbol", "timestamp"]).groupby("symbol", sort=True):
            self._ts[str(sym)] = g["timestamp"].to_numpy(dtype="datetime64[ns]").astype("int64")
            self._rate[str(sym)] = g["funding_rate"].to_numpy(dtype="float64")

    @property
    def symbols(self) -> list[str]:
        return sorted(self._ts)

    def events(self, symbol: str, after: pd.Timestamp | None, upto: pd.Timestamp) -> list[tuple[pd.Timestamp, float]]:
        """``(F, rate)`` with ``after < F <= upto`` (``after=None``: no lower bound), in time order."""
        ts = self._ts.get(symbol)
        if ts is None:
            raise _missing(symbol)
        lo = 0 if after is None else int(np.searchsorted(ts, pd.Timestamp(after).value, side="right"))
        hi = int(np.searchsorted(ts, pd.Timestamp(upto).value, side="right"))
        return [(pd.Timestamp(int(t), tz="UTC"), float(r)) for t, r in zip(ts[lo:hi], self._rate[symbol][lo:hi])]

    def next_time_after(self, symbol: str, after_ns: int) -> int | None:
        """The first event time of ``symbol`` strictly after ``after_ns`` (ns since the epoch), None: none."""
        ts = self._ts.get(symbol)
        if ts is None:
            raise _missing(symbol)
        i = int(np.searchsorted(ts, after_ns, side="right"))
        return int(ts[i]) if i < len(ts) else None

    def last_rate_before(self, symbol: str, now: pd.Timestamp) -> float | None:
        """The rate of the last event of ``symbol`` strictly before ``now`` (None: none stored)."""
        ts = self._ts.get(symbol)
        if ts is None:
            return None
        i = int(np.searchsorted(ts, pd.Timestamp(now).value, side="left")) - 1
        return float(self._rate[symbol][i]) if i >= 0 else None

    def check_covers(self, symbol: str, first: pd.Timestamp, last: pd.Timestamp) -> None:
        """Raise unless funding is known across the symbol's traded span ``[first, last]``
        (no hole longer than ``MAX_FUNDING_INTERVAL``): a missing event would be a silent zero."""
        ts = self._ts.get(symbol)
        if ts is None or len(ts) == 0:
            raise _missing(symbol)
        lo, hi = pd.Timestamp(first).value, pd.Timestamp(last).value
        inside = ts[(ts > lo) & (ts < hi)]
        points = np.concatenate([[lo], inside, [hi]])
        gaps = np.diff(points)
        worst = int(np.argmax(gaps)) if len(gaps) else 0
        if len(gaps) and gaps[worst] > MAX_FUNDING_INTERVAL.value:
            a = pd.Timestamp(int(points[worst]), tz="UTC")
            b = pd.Timestamp(int(points[worst + 1]), tz="UTC")
            have = f"{pd.Timestamp(int(ts[0]), tz='UTC')} .. {pd.Timestamp(int(ts[-1]), tz='UTC')}"
            raise DataError(f"funding history of {symbol} has no event between {a} and {b} (stored: {have}) "
                            f"but the run trades it from {pd.Timestamp(first)} to {pd.Timestamp(last)}; "
                            f"collect funding for that span (`qt collect`) or shorten the run")


def as_schedule(funding: pd.DataFrame | FundingSchedule | None) -> FundingSchedule | None:
    if funding is None or isinstance(funding, FundingSchedule):
        return funding
    return FundingSchedule(funding)


def require_funding(schedule: FundingSchedule | None, spans: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]]) -> None:
    """Every perp symbol in ``spans`` (symbol -> first, last bar open) must have funding
    covering its span; spot symbols need none. Raises ``DataError`` naming the symbol."""
    for sym in sorted(spans):
        if not is_perp(sym):
            continue
        if schedule is None:
            raise _missing(sym)
        schedule.check_covers(sym, *spans[sym])


def payment(symbol: str, funding_ts: pd.Timestamp, rate: float, qty: float, mark_price: float,
            booked_ts: pd.Timestamp) -> FundingPayment:
    notional = qty * mark_price
    return FundingPayment(symbol, funding_ts, booked_ts, rate, qty, mark_price, notional, rate * notional)


def settle_funding(schedule: FundingSchedule | None, positions: Mapping, marks: Mapping[str, float],
                   after: pd.Timestamp | None, upto: pd.Timestamp) -> list[FundingPayment]:
    """Payments due for events ``after < F <= upto`` on the open ``positions`` (symbol ->
    object with ``qty``), marked at ``marks`` (last close per symbol), booked at ``upto``.

    Pure: the caller applies them to its ledger. Called by the loop at each bar open, before
    the fills, with ``after`` = the previous bar's open time.
    """
    out: list[FundingPayment] = []
    for sym in sorted(positions):
        if not is_perp(sym):
            continue
        if schedule is None:
            raise _missing(sym)
        pos = positions[sym]
        qty = pos.qty * getattr(pos, "sign", 1)
        for f_ts, rate in schedule.events(sym, after, upto):
            out.append(payment(sym, f_ts, rate, qty, marks[sym], upto))
    return out


def holding_payments(schedule: FundingSchedule | None, symbol: str, qty: float, closes: pd.Series,
                     index: pd.DatetimeIndex) -> list[FundingPayment]:
    """Funding of a position held from the open of its first bar to the close of its last
    (buy-and-hold), by the same rule as the loop: events ``first < F <= last`` (bar opens of
    ``closes``, which holds the symbol's closes indexed by open time, without NaN), marked at
    the close of the last bar opening before ``F``, booked at the first ``index`` time >= F."""
    if not is_perp(symbol):
        return []
    if schedule is None:
        raise _missing(symbol)
    opens = closes.index
    out = []
    for f_ts, rate in schedule.events(symbol, opens[0], opens[-1]):
        mark = float(closes.iloc[int(opens.searchsorted(f_ts, side="left")) - 1])
        booked = index[int(index.searchsorted(f_ts, side="left"))]
        out.append(payment(symbol, f_ts, rate, qty, mark, booked))
    return out


def payments_frame(payments: Iterable[FundingPayment]) -> pd.DataFrame:
    return pd.DataFrame([tuple(getattr(p, c) for c in PAYMENT_COLUMNS) for p in payments], columns=PAYMENT_COLUMNS)
