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


def _gapped_candle_keys() -> tuple[pd.DataFrame, pd.Series]:
    """Two symbols on one hourly clock of 100 bars; GAP/USDT has no candles for bars 60..89,
    across the holdout cut at bar 75 (last 25 %) and longer than any embargo used below."""
    clock = pd.Series(pd.date_range("2023-01-01", periods=100, freq="h", tz="UTC"))
    full = pd.DataFrame({"symbol": "FULL/USDT", "timestamp": clock})
    gapped = pd.DataFrame({"symbol": "GAP/USDT", "timestamp": clock[(clock.index < 60) | (clock.index >= 90)]})
    keys = pd.concat([full, gapped], ignore_index=True).sample(frac=1.0, random_state=1).reset_index(drop=True)
    return keys, clock


@pytest.mark.parametrize("horizon,embargo", [(2, 5), (4, 10)])
def test_purge_by_label_end_time_drops_a_label_reaching_across_a_gap(horizon, embargo):
    from features.labels import label_end_times

    keys, clock = _gapped_candle_keys()
    ends = pd.Series(label_end_times(keys, keys, horizon))
    labelled = ends.notna().to_numpy()  # rows whose label exists (each symbol's last h rows have none)
    keys, ends = keys[labelled].reset_index(drop=True), ends[labelled].reset_index(drop=True)
    # by hand: GAP/USDT's row at bar 59 reads the bar h rows later: bar 89 + h, inside the holdout
    last_before_gap = (keys["symbol"] == "GAP/USDT") & (keys["timestamp"] == clock[59])
    assert ends[last_before_gap].iloc[0] == clock[89 + horizon]

    train, hold = holdout_split(keys["timestamp"], 0.25, embargo_bars=embargo, horizon_bars=horizon,
                                label_end=ends)
    start = int(clock.searchsorted(keys["timestamp"][hold].min()))  # first holdout bar on the clock
    assert 60 < start < 90  # the cut lies inside GAP/USDT's gap ...
    assert ends[last_before_gap].iloc[0] >= clock[start]  # ... so that row's label ends in the holdout
    # no training label ends inside the holdout or its embargo (bars start - embargo ..)
    assert (ends[train] < clock[start - embargo]).all()
    assert not last_before_gap[train].any()
    # gap-free rows are purged no more than before: FULL/USDT trains up to bar start - embargo - h - 1
    full_train = keys["timestamp"][train & (keys["symbol"] == "FULL/USDT").to_numpy()]
    assert full_train.max() == clock[start - embargo - horizon - 1]

    for train_idx, test_idx in walk_forward_folds(keys["timestamp"], 3, horizon_bars=horizon,
                                                  embargo_bars=embargo, label_end=ends):
        first_test = keys["timestamp"][test_idx].min()
        cut = clock[clock.searchsorted(first_test) - embargo]
        assert (ends[train_idx] < cut).all(), "a training label ends inside a test block or its embargo"
