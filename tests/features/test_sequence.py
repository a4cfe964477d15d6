"""Return windows (features.sequence): each row carries the last N one-bar returns of its symbol."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.pit import check_lookahead
from features.sequence import SOURCE_COLUMN, add_return_windows, all_window_columns, window_columns
from qt.config import FeatureParams
from qt.errors import DataError

LENGTH = 5


def _two_symbols(n_a: int = 12, n_b: int = 9) -> pd.DataFrame:
    """Two symbols, hourly rows, distinct return values (a lag mix-up cannot go unnoticed)."""
    rng = np.random.default_rng(3)
    ts_a = pd.date_range("2024-01-01", periods=n_a, freq="h", tz="UTC")
    ts_b = pd.date_range("2024-01-01 05:00", periods=n_b, freq="h", tz="UTC")
    return pd.DataFrame({
        "symbol": ["AAA/USDT"] * n_a + ["BBB/USDT"] * n_b,
        "timestamp": ts_a.append(ts_b),
        SOURCE_COLUMN: rng.standard_normal(n_a + n_b),
        "rsi_14": rng.uniform(0, 100, n_a + n_b),
    })


def test_window_columns_are_newest_first():
    assert window_columns(3) == ["seq_ret_0", "seq_ret_1", "seq_ret_2"]
    assert window_columns(0) == []


def test_window_holds_the_symbols_own_lagged_returns():
    frame = _two_symbols()
    out = add_return_windows(frame, LENGTH)
    for symbol, rows in out.groupby("symbol"):
        src = rows[SOURCE_COLUMN].to_numpy()
        for i in range(len(rows)):
            got = rows[window_columns(LENGTH)].iloc[i].to_numpy()
            if i + 1 < LENGTH:  # fewer than LENGTH rows of history (itself included): no window
                assert np.isnan(got).all(), (symbol, i)
            else:  # seq_ret_k = the return k rows earlier, bit for bit (float64 kept)
                assert got.tolist() == [src[i - k] for k in range(LENGTH)], (symbol, i)
    # the other columns are untouched
    pd.testing.assert_frame_equal(out[frame.columns], frame)


def test_exogenous_windows_hold_the_same_lags_of_their_own_column():
    frame = _two_symbols()
    out = add_return_windows(frame, LENGTH, exog=["rsi_14"])
    assert list(out.columns[len(frame.columns):]) == all_window_columns(LENGTH, ["rsi_14"])
    assert window_columns(2, "rsi_14") == ["seq_rsi_14_0", "seq_rsi_14_1"]
    for _, rows in out.groupby("symbol"):
        src = rows["rsi_14"].to_numpy()
        ret = rows[window_columns(LENGTH)].to_numpy()
        got = rows[window_columns(LENGTH, "rsi_14")].to_numpy()
        for i in range(len(rows)):
            if i + 1 < LENGTH:
                assert np.isnan(got[i]).all()
            else:
                assert got[i].tolist() == [src[i - k] for k in range(LENGTH)]
        assert (np.isnan(got) == np.isnan(ret)).all()  # the same rows have full windows
    with pytest.raises(DataError, match="rvol_24"):
        add_return_windows(frame, LENGTH, exog=["rvol_24"])


def test_shuffled_input_gives_the_same_windows_in_its_own_row_order():
    frame = _two_symbols()
    shuffled = frame.sample(frac=1.0, random_state=7)
    out = add_return_windows(shuffled, LENGTH)
    assert out.index.tolist() == shuffled.index.tolist()  # order and index preserved
    expected = add_return_windows(frame, LENGTH).loc[shuffled.index]
    pd.testing.assert_frame_equal(out, expected)


def test_length_zero_returns_the_features_unchanged():
    frame = _two_symbols()
    out = add_return_windows(frame, 0)
    pd.testing.assert_frame_equal(out, frame)
    assert out is not frame


@pytest.mark.parametrize("drop, needle", [(SOURCE_COLUMN, "logret_1"), ("symbol", "symbol")])
def test_missing_column_is_one_clear_line(drop, needle):
    with pytest.raises(DataError, match=needle) as err:
        add_return_windows(_two_symbols().drop(columns=[drop]), LENGTH)
    assert "\n" not in str(err.value)


def test_duplicate_bar_is_refused():
    frame = _two_symbols()
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    with pytest.raises(DataError, match="duplicate rows for AAA/USDT"):
        add_return_windows(frame, LENGTH)


def test_windows_on_computed_features_have_no_lookahead(synthetic):
    """The window of bar t is unchanged when bars after t are removed (features.pit)."""
    params = FeatureParams()

    def features_with_windows(candles: pd.DataFrame) -> pd.DataFrame:
        return add_return_windows(compute_features(candles, params), 16)

    assert check_lookahead(synthetic, features_with_windows, cuts=6, seed=4) == []


def test_peeking_window_would_be_caught(synthetic):
    """Control for the test above: a window shifted one bar into the future is reported."""
    params = FeatureParams()

    def leaking(candles: pd.DataFrame) -> pd.DataFrame:
        feats = compute_features(candles, params)
        out = add_return_windows(feats, 4)
        out["seq_ret_0"] = feats.groupby("symbol")[SOURCE_COLUMN].shift(-1).to_numpy()
        return out

    violations = check_lookahead(synthetic, leaking, cuts=3, seed=4)
    assert violations and all(v.startswith("seq_ret_0 of ") for v in violations)


def test_windows_of_any_rows_asked_a_batch_at_a_time_equal_the_window_columns():
    """Training builds windows per batch of rows (``ReturnWindows``) instead of 192 columns per row:
    any subset, in any order, must equal those rows of ``add_return_windows``; and ``complete``
    must keep exactly the rows ``dropna`` over the window columns keeps (a NaN inside a window too)."""
    from features.sequence import ReturnWindows

    frame = _two_symbols(40, 33).sample(frac=1.0, random_state=5).reset_index(drop=True)
    frame.loc[[3, 17, 50], "rsi_14"] = np.nan  # NaNs inside some windows of the exogenous column
    full = add_return_windows(frame, LENGTH, exog=["rsi_14"])
    cols = all_window_columns(LENGTH, ["rsi_14"])
    windows = ReturnWindows(frame, LENGTH, exog=["rsi_14"])
    rows = np.random.default_rng(1).permutation(len(frame))[:45]
    np.testing.assert_array_equal(windows.matrix(rows), full[cols].to_numpy()[rows])
    kept = full.dropna(subset=cols).index.to_numpy()
    assert np.flatnonzero(windows.complete()).tolist() == sorted(kept.tolist())
    assert len(kept) < len(frame) - 2 * (LENGTH - 1)  # the NaNs did remove windows beyond the warm-up
