"""Time-ordered splits that cannot leak a label into the test side.

Positions in time are counted in *bars of the shared clock*: the sorted unique
timestamps of all symbols together, so every symbol's row at a timestamp lands on
the same side of a cut. A row at bar ``i`` carries a label computed from bars
``i .. i + horizon_bars``, where ``horizon_bars`` is the label's *reach*
(``features.labels.label_reach_bars``: h for the forward return close[t+h] / close[t],
``max_holding_bars + 1`` for the triple barrier, whose last exit fills at that bar's open);
callers pass the reach, never ``labels.horizon_bars`` itself. A training row is therefore kept
only when ``i + horizon_bars < test_start - embargo_bars``:

* **purge** - no training label window reaches the first test bar;
* **embargo** - a further ``embargo_bars`` gap, so slowly decaying serial
  dependence (volatility clustering, overlapping features) does not carry over.

With ``label_end`` (per row, the timestamp of the bar the label ends on:
``features.labels.label_end_times``) the purge is by *time*: a training row is kept
only when its label ends before the clock's bar ``test_start - embargo_bars``. Labels
count rows per symbol, so a symbol with a gap at the cut has a label that ends far
later than ``i + horizon_bars`` bars of the shared clock; counting bars would let it
reach into the test period. On gap-free data both rules keep the same rows.

Both functions are pure and return positions into the ``timestamps`` given, in
its original (any) row order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from qt.errors import DataError


class _Clock:
    """Bar index on the shared clock for every row, the unique bars, and each row's label end."""

    def __init__(self, timestamps, label_end=None):
        ts = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
        codes, uniques = pd.factorize(ts, sort=True)
        self.bar_pos = np.asarray(codes, dtype=np.int64)
        self.bars = pd.DatetimeIndex(uniques)
        self.n_bars = len(uniques)
        self.label_end = None
        if label_end is not None:
            end = pd.DatetimeIndex(pd.to_datetime(pd.Series(label_end).reset_index(drop=True), utc=True))
            if len(end) != len(ts):
                raise DataError(f"{len(end)} label end times for {len(ts)} rows; pass one per row")
            self.label_end = end

    def keep_before(self, test_start_bar: int, horizon_bars: int, embargo_bars: int) -> np.ndarray:
        """Rows whose label ends before the test block, with the embargo gap in between.

        By time when label ends are known (an unknown end, NaT, is never kept), else by bars."""
        cut_bar = test_start_bar - embargo_bars
        if self.label_end is None:
            return self.bar_pos + horizon_bars < cut_bar
        if cut_bar <= 0:
            return np.zeros(len(self.bar_pos), dtype=bool)
        return np.asarray(self.label_end < self.bars[cut_bar], dtype=bool)  # NaT compares False


def holdout_split(timestamps, fraction: float, embargo_bars: int, horizon_bars: int,
                  label_end=None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout): the last ``fraction`` of the unique bars is the holdout.

    Rows between the two (purged + embargoed) are in neither mask; ``label_end``: see the
    module docstring. Raises DataError
    when too few bars remain on the training side to train anything.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"holdout fraction {fraction} must be in (0, 1); fix train.holdout_fraction")
    clock = _Clock(timestamps, label_end)
    n_bars = clock.n_bars
    n_holdout = max(1, math.ceil(n_bars * fraction))
    holdout_start = n_bars - n_holdout
    holdout_mask = clock.bar_pos >= holdout_start
    train_mask = clock.keep_before(holdout_start, horizon_bars, embargo_bars)
    if not train_mask.any():
        raise DataError(f"only {n_bars} bars: nothing left to train on after a {fraction:.0%} holdout, "
                        f"{horizon_bars}-bar purge and {embargo_bars}-bar embargo; collect more history")
    return train_mask, holdout_mask


def walk_forward_folds(timestamps, n_folds: int, horizon_bars: int, embargo_bars: int,
                       label_end=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds ``[(train_idx, test_idx), ...]`` in time order.

    The unique bars are cut into ``n_folds + 1`` equal blocks; fold k tests block
    k + 1 and trains on everything before it, purged and embargoed. Only the past
    trains, so no embargo is needed after a test block. A fold whose purged train
    side is empty is an error (too little data for this many folds).
    """
    if n_folds < 1:
        raise DataError(f"n_folds={n_folds}: need at least one fold; fix train.folds")
    clock = _Clock(timestamps, label_end)
    bar_pos, n_bars = clock.bar_pos, clock.n_bars
    edges = np.linspace(0, n_bars, n_folds + 2).round().astype(int)
    folds = []
    for k in range(n_folds):
        test_start, test_end = edges[k + 1], edges[k + 2]
        test_idx = np.flatnonzero((bar_pos >= test_start) & (bar_pos < test_end))
        train_idx = np.flatnonzero(clock.keep_before(test_start, horizon_bars, embargo_bars))
        if len(train_idx) == 0 or len(test_idx) == 0:
            raise DataError(f"{n_bars} bars are too few for {n_folds} walk-forward folds with a "
                            f"{horizon_bars}-bar purge and {embargo_bars}-bar embargo; lower train.folds "
                            f"or train.embargo_bars, or collect more history")
        folds.append((train_idx, test_idx))
    return folds
