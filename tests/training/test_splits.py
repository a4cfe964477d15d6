"""Splits never let a training label window touch a test row, and keep the embargo gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qt.errors import DataError
from training.splits import holdout_split, walk_forward_folds


def _timestamps(n_bars: int, symbols: int = 3, shuffle: bool = True) -> pd.Series:
    """Rows of several symbols on one hourly clock, in scrambled row order."""
    base = pd.date_range("2023-01-01", periods=n_bars, freq="h", tz="UTC")
    ts = pd.Series(np.tile(base, symbols))
    if shuffle:
        ts = ts.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return ts


def _bar(ts: pd.Series) -> np.ndarray:
    """Hour index since the first bar: the independent clock for the assertions."""
    return ((ts - ts.min()) / pd.Timedelta(hours=1)).to_numpy().astype(int)


@pytest.mark.parametrize("horizon,embargo", [(1, 0), (4, 24), (12, 5)])
def test_holdout_is_the_last_fraction_and_train_labels_stop_before_it(horizon, embargo):
    ts = _timestamps(200)
    train, hold = holdout_split(ts, 0.25, embargo_bars=embargo, horizon_bars=horizon)
    bar = _bar(ts)
    assert set(bar[hold]) == set(range(150, 200))  # last 50 of 200 bars, every symbol
    assert not (train & hold).any()
    # no train label window t..t+h reaches the first holdout bar, and the embargo gap is kept
    assert bar[train].max() + horizon < 150 - embargo
    # nothing more is purged than necessary: the last allowed bar is used
    assert bar[train].max() == 150 - embargo - horizon - 1


def test_holdout_puts_all_symbols_of_a_timestamp_on_the_same_side():
    ts = _timestamps(100)
    train, hold = holdout_split(ts, 0.3, embargo_bars=2, horizon_bars=3)
    for mask in (train, hold):
        in_side = set(ts[mask])
        out_side = set(ts[~mask])
        assert not in_side & out_side


def test_holdout_refuses_when_nothing_is_left_to_train():
    with pytest.raises(DataError, match="nothing left to train"):
        holdout_split(_timestamps(20), 0.5, embargo_bars=10, horizon_bars=4)


@pytest.mark.parametrize("horizon,embargo", [(1, 0), (4, 24), (6, 3)])
def test_walk_forward_folds_are_purged_embargoed_and_expanding(horizon, embargo):
    ts = _timestamps(500)
    bar = _bar(ts)
    folds = walk_forward_folds(ts, 4, horizon_bars=horizon, embargo_bars=embargo)
    assert len(folds) == 4
    previous_train = 0
    previous_test_end = -1
    for train_idx, test_idx in folds:
        test_bars = bar[test_idx]
        train_bars = bar[train_idx]
        first_test = test_bars.min()
        # every training label window t..t+h ends before the first test row, with the embargo between
        assert (train_bars + horizon < first_test - embargo).all()
        # no training row overlaps any test row's time
        assert not set(train_bars) & set(test_bars)
        # test blocks are contiguous, ordered, and cover all symbols of their bars
        assert first_test > previous_test_end
        assert len(test_idx) == 3 * (test_bars.max() - first_test + 1)
        previous_test_end = test_bars.max()
        # expanding window
        assert len(train_idx) > previous_train
        previous_train = len(train_idx)
    # the test blocks tile the time after the first block
    assert previous_test_end == 499


def test_walk_forward_refuses_too_many_folds_for_the_data():
    with pytest.raises(DataError, match="too few"):
        walk_forward_folds(_timestamps(30), 5, horizon_bars=4, embargo_bars=10)
