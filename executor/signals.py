"""Signals: what the model says about one symbol at one bar, and where they come from.

A ``Signal``'s ``timestamp`` is the OPEN time of the feature bar t (the last bar whose
close the features saw). The decision it drives acts at the open of bar t+1. The same
thresholds (``SignalParams``) turn a probability into an action in the backtest, the
service and the executor, so that what was tested is what trades.

Signal sources (``FrameSignalSource``, and ``HttpSignalSource``: the serving service) answer
``fetch(symbols, as_of)`` with the latest signal per symbol whose timestamp is
``<= as_of`` - the same rule the service uses - and raise ``SignalUnavailable`` when they
cannot answer at all (the executor then opens nothing and keeps managing exits).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx
import numpy as np
import pandas as pd

from qt.config import SignalParams
from qt.values import positional_maker
from qt.errors import DataError, RetryableError

Action = Literal["buy", "sell", "hold"]
ACTIONS: tuple[str, ...] = ("buy", "sell", "hold")
SIGNAL_COLUMNS = ["symbol", "timestamp", "action", "confidence", "expected_return", "model_version"]


class SignalUnavailable(RetryableError):
    """The signal source could not answer (service down, 503, timeout): open nothing new."""


@dataclass(frozen=True, slots=True)
class Signal:
    symbol: str
    timestamp: pd.Timestamp  # open time of the feature bar t (UTC); acts at the open of t+1
    action: str  # "buy" | "sell" | "hold"
    confidence: float  # = prob_up
    expected_return: float  # log return over the label horizon
    model_version: str
    # ATR of bar t over its close (the feature ``atr_{risk.atr_period}``), for ATR-scaled stop and
    # take-profit levels; NaN when the source did not send it (an ATR level then opens nothing).
    atr: float = float("nan")


_signal = positional_maker(Signal)  # one per symbol-bar a backtest steps (qt.values)
_UTC = pd.Timestamp(0, tz="UTC").tzinfo


class SignalSource(Protocol):
    def fetch(self, symbols: Sequence[str], as_of: pd.Timestamp) -> list[Signal]:
        """Latest signal per symbol with timestamp <= as_of; raises SignalUnavailable."""
        ...


def action_from_probability(prob_up: float, params: SignalParams) -> str:
    """buy if prob_up >= buy_threshold, sell if prob_up <= sell_threshold, else hold.

    A NaN probability is ``hold``: no evidence is never a reason to trade.
    """
    if prob_up != prob_up:  # NaN
        return "hold"
    if prob_up >= params.buy_threshold:
        return "buy"
    if prob_up <= params.sell_threshold:
        return "sell"
    return "hold"


def signals_from_predictions(pred_df: pd.DataFrame, params: SignalParams, model_version: str) -> pd.DataFrame:
    """Predictions ``[symbol, timestamp, prob_up, expected_return]`` -> signals frame.

    Vectorised version of ``action_from_probability`` (same thresholds, same ties:
    ``>=`` buy, ``<=`` sell). ``confidence`` is ``prob_up``.
    """
    missing = {"symbol", "timestamp", "prob_up", "expected_return"} - set(pred_df.columns)
    if missing:
        raise DataError(f"predictions frame lacks columns {sorted(missing)}; "
                        "expected symbol, timestamp, prob_up, expected_return")
    prob = pred_df["prob_up"].to_numpy(dtype="float64")
    action = np.where(prob >= params.buy_threshold, "buy",
                      np.where(prob <= params.sell_threshold, "sell", "hold"))
    action = np.where(np.isnan(prob), "hold", action)
    out = pd.DataFrame({
        "symbol": pred_df["symbol"].astype(str).to_numpy(),
        "timestamp": pred_df["timestamp"].to_numpy(),
        "action": action.astype(object),
        "confidence": prob,
        "expected_return": pred_df["expected_return"].to_numpy(dtype="float64"),
        "model_version": str(model_version),
    })
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    return out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def _validate_signals_frame(signals_df: pd.DataFrame, actions=None) -> None:
    """``actions``: the frame's distinct actions when the caller has them already."""
    missing = set(SIGNAL_COLUMNS) - set(signals_df.columns)
    if missing:
        raise DataError(f"signals frame lacks columns {sorted(missing)}; build it with "
                        "executor.signals.signals_from_predictions")
    bad = set(signals_df["action"].unique() if actions is None else actions) - set(ACTIONS)
    if bad:
        raise DataError(f"signals frame has unknown actions {sorted(bad, key=str)}; allowed: buy, sell, hold")


class FrameSignalSource:
    """Signals served from a signals frame, with the service's rule (latest ts <= as_of).

    The backtest uses this source; a missing row therefore yields the previous bar's
    signal, which the risk engine then refuses as stale - exactly what would happen
    live when the service lags.
    """

    def __init__(self, signals_df: pd.DataFrame):
        _validate_signals_frame(signals_df, actions=[])  # the columns; the actions once factorized below
        # Built column-wise over the whole frame, then cut per symbol: a backtest builds one
        # Signal per symbol-bar, and per-group, per-cell pandas iteration was most of its set-up.
        n = len(signals_df)
        stamps = pd.to_datetime(signals_df["timestamp"], utc=True)
        self._unit = stamps.dtype.unit  # the frame's own: a Signal's timestamp keeps it
        ts_all = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # ns since epoch
        codes, names = pd.factorize(signals_df["symbol"].astype(str), sort=True)
        # the string columns by their few distinct values (hashed once), not one conversion per row
        act_codes, act_names = pd.factorize(signals_df["action"].astype(str), use_na_sentinel=False)
        _validate_signals_frame(signals_df, actions=list(act_names))
        ver_codes, ver_names = pd.factorize(signals_df["model_version"].astype(str), use_na_sentinel=False)
        columns = [np.asarray(act_names, dtype=object)[act_codes],
                   signals_df["confidence"].to_numpy(dtype="float64"),
                   signals_df["expected_return"].to_numpy(dtype="float64"),
                   np.asarray(ver_names, dtype=object)[ver_codes],
                   signals_df["atr"].to_numpy(dtype="float64") if "atr" in signals_df.columns else np.full(n, np.nan),
                   np.array([ACTIONS.index(str(a)) for a in act_names], dtype=np.int8)[act_codes]]  # ACTIONS index
        # rows by symbol, then time, equal times in frame order (a stable sort; none when sorted already)
        if n and not np.all((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (ts_all[1:] >= ts_all[:-1]))):
            order = np.lexsort((ts_all, codes))
            codes, ts_all, columns = codes[order], ts_all[order], [c[order] for c in columns]
        # one Timestamp (of the frame's own unit) per distinct time, made when a Signal needs it
        self._time_made: dict[int, pd.Timestamp] = {}
        # per symbol: its rows' ns times, its columns, and its Signals - made when first served
        # (a backtest's quiet bars read the columns only: no object per symbol-bar)
        self._by_symbol: dict[str, tuple[list[int], tuple[np.ndarray, ...], list[Signal | None]]] = {}
        self._ts_ns: dict[str, np.ndarray] = {}
        cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1 if n else np.array([], dtype=np.int64)
        for lo, hi in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [n]]).tolist()):
            if hi > lo:
                sym = str(names[codes[lo]])
                self._by_symbol[sym] = (ts_all[lo:hi].tolist(), tuple(c[lo:hi] for c in columns), [None] * (hi - lo))
                self._ts_ns[sym] = ts_all[lo:hi]  # the same times as an array (signals_on's search)
        # per symbol: the row served last - a backtest asks for bars in time order, so the next
        # answer is almost always that row or the following one (no search)
        self._cursor: dict[str, int] = {}

    @property
    def symbols(self) -> list[str]:
        """The symbols it has signals for, sorted."""
        return sorted(self._by_symbol)

    @property
    def first_timestamp(self) -> pd.Timestamp | None:
        firsts = [ts_ns[0] for ts_ns, _, _ in self._by_symbol.values()]
        return self._time(min(firsts)) if firsts else None

    @property
    def last_timestamp(self) -> pd.Timestamp | None:
        lasts = [ts_ns[-1] for ts_ns, _, _ in self._by_symbol.values()]
        return self._time(max(lasts)) if lasts else None

    def fetch(self, symbols: Sequence[str], as_of: pd.Timestamp) -> list[Signal]:
        as_of_ns = as_of.value if isinstance(as_of, pd.Timestamp) else pd.Timestamp(as_of).value
        if (as_of_ns not in self._time_made and isinstance(as_of, pd.Timestamp) and as_of.unit == self._unit
                and as_of.tzinfo is _UTC):
            self._time_made[as_of_ns] = as_of  # the caller's object is this time's Timestamp (making one costs ~2 us)
        out: list[Signal] = []
        cursor = self._cursor
        for sym in symbols:
            entry = self._by_symbol.get(sym)
            if entry is None:
                continue
            ts_ns, cols, made = entry
            n = len(ts_ns)
            i = cursor.get(sym, -1)
            # the row served last time, or the one after it; else a binary search
            if not (0 <= i < n and ts_ns[i] <= as_of_ns):
                i = -1
            elif i + 1 < n and ts_ns[i + 1] <= as_of_ns:
                i += 1
                if i + 1 < n and ts_ns[i + 1] <= as_of_ns:
                    i = -1
            if i < 0:
                i = bisect.bisect_right(ts_ns, as_of_ns) - 1
            cursor[sym] = i
            if i >= 0:
                sig = made[i]
                if sig is None:
                    action, confidence, expected, version, atr, _ = cols
                    sig = made[i] = _signal(sym, self._time(ts_ns[i]), action[i], confidence.item(i),
                                            expected.item(i), version[i], atr.item(i))
                out.append(sig)
        return out

    def _time(self, ns: int) -> pd.Timestamp:
        """The Timestamp of ``ns``, one object shared by every symbol's signal at that time."""
        t = self._time_made.get(ns)
        if t is None:
            t = self._time_made[ns] = pd.Timestamp(ns, tz="UTC").as_unit(self._unit)
        return t

    def signals_on(self, symbols: Sequence[str], timestamps: pd.DatetimeIndex) -> list[tuple[np.ndarray, ...]]:
        """Per symbol, the action, confidence, model version and action code (its index in
        ``ACTIONS``) of what ``fetch`` answers at each of ``timestamps`` (action and version None,
        confidence NaN, code -1: no signal yet), in one vectorised search and without Signal
        objects: a backtest reads ahead with it for the bars where nothing can happen."""
        grid = timestamps.as_unit("ns").asi8
        out = []
        for sym in symbols:
            entry = self._by_symbol.get(sym)
            if entry is None:
                none = np.full(len(grid), None, dtype=object)
                out.append((none, np.full(len(grid), np.nan), none, np.full(len(grid), -1, dtype=np.int8)))
                continue
            _, (action, confidence, _, version, _, code), _ = entry
            ts_ns = self._ts_ns[sym]
            if len(ts_ns) == len(grid) and np.array_equal(ts_ns, grid):  # a signal on every bar (the usual frame)
                rows = np.arange(len(grid))
            else:
                rows = np.searchsorted(ts_ns, grid, side="right") - 1
            before = rows < 0  # no signal yet
            rows[before] = 0
            picked = []
            for col, missing in ((action, None), (confidence, np.nan), (version, None), (code, -1)):
                cells = col[rows]
                cells[before] = missing
                picked.append(cells)
            out.append(tuple(picked))
        return out


class HttpSignalSource:
    """Client of the service contract ``POST {url}/signals``. Raises ``SignalUnavailable``."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def fetch(self, symbols: Sequence[str], as_of: pd.Timestamp) -> list[Signal]:
        as_of_iso = pd.Timestamp(as_of).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            resp = self._client.post(f"{self.url}/signals", json={"symbols": list(symbols), "as_of": as_of_iso})
        except httpx.HTTPError as exc:
            raise SignalUnavailable(f"{self.url}/signals unreachable: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            raise SignalUnavailable(f"{self.url}/signals answered {resp.status_code}: {resp.text[:200]}")
        try:
            body = resp.json()
            out = []
            for s in body["signals"]:
                if s["action"] not in ACTIONS:
                    raise ValueError(f"unknown action {s['action']!r}")
                out.append(Signal(symbol=str(s["symbol"]), timestamp=pd.Timestamp(s["feature_timestamp"]),
                                  action=str(s["action"]), confidence=float(s["confidence"]),
                                  expected_return=float(s["expected_return"]),
                                  model_version=str(s.get("model_version", body.get("model_version"))),
                                  atr=float(s["atr"]) if s.get("atr") is not None else float("nan")))
        except (ValueError, KeyError, TypeError) as exc:
            raise SignalUnavailable(f"{self.url}/signals reply does not follow the contract: {exc}") from exc
        for s in out:
            if s.timestamp.tzinfo is None:
                raise SignalUnavailable(f"feature_timestamp {s.timestamp} has no timezone; the contract is UTC")
        return out
