"""materialise with the multi-input families (funding, basis, cross-asset): it reads the funding
history and the reference candles from the same lake, stores what ``compute_features`` gives
with those inputs, keeps an incremental run equal to a fresh one when only an input changed,
and refuses a symbol whose input is missing with a DataError that says what to collect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features
from features.materialise import materialise
from features.multi_input import multi_input_columns
from features.store import read_features
from qt.config import Params, SyntheticParams
from qt.errors import DataError
from data.lake import write_candles, write_funding
from data.synthetic import generate_market

PERP = "ETH/USDT:USDT"
SYMBOLS = ["BTC/USDT", "ETH/USDT", PERP]
PARAMS = Params(features={"funding_last": True, "funding_mean": [3], "basis": True, "cross": [20]})
# daily bars from 2021-01-01: periods 2021 .. 2024
CANDLES = generate_market(SYMBOLS, "1d", SyntheticParams(bars=1200, start="2021-01-01"), seed=7)
_EVENTS = pd.date_range("2021-01-01", periods=1200 * 3, freq="8h", tz="UTC")
FUNDING = pd.DataFrame({"timestamp": _EVENTS.astype("datetime64[ms, UTC]"),
                        "funding_rate": np.random.default_rng(3).normal(1e-4, 2e-4, len(_EVENTS))})


def _lake(root: Path, candles: pd.DataFrame, funding: pd.DataFrame | None = FUNDING) -> Path:
    for sym, part in candles.groupby("symbol"):
        write_candles(root, str(sym), "1d", part)
    if funding is not None:
        write_funding(root, PERP, funding)
    return root


def _files(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_stored_multi_input_columns_equal_compute_features_with_the_lake_inputs(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES)
    materialise(lake, [PERP, "ETH/USDT"], "1d", PARAMS, tmp_path / "store")
    stored = read_features(tmp_path / "store")
    reference = CANDLES[CANDLES["symbol"].isin(["BTC/USDT", "ETH/USDT"])]
    expected = compute_features(CANDLES[CANDLES["symbol"].isin([PERP, "ETH/USDT"])], PARAMS.features,
                                funding=FUNDING.assign(symbol=PERP), reference=reference)
    pd.testing.assert_frame_equal(stored[["symbol", "timestamp"]], expected[["symbol", "timestamp"]])
    columns = multi_input_columns(PARAMS.features)
    assert {"funding_last", "funding_mean_3", "basis_log", "btc_logret_20", "beta_btc_20", "corr_btc_20"} \
        <= set(columns)
    # funding, basis and the reference return are point lookups: exact in every period
    exact = ["funding_last", "funding_mean_3", "basis_log", "btc_logret_20"]
    pd.testing.assert_frame_equal(stored[exact], expected[exact], check_exact=True)
    perp = stored["symbol"] == PERP
    ts = stored.loc[perp, "timestamp"]
    # spot-perp basis by hand: ln(perp close / spot close) of the same bar
    closes = CANDLES.pivot(index="timestamp", columns="symbol", values="close")
    assert np.allclose(stored.loc[perp, "basis_log"],
                       np.log(closes.loc[ts, PERP] / closes.loc[ts, "ETH/USDT"]).to_numpy(), rtol=0, atol=1e-15)
    # rolling beta/corr restart in each anchored period: equal within rounding
    for col in ("beta_btc_20", "corr_btc_20"):
        assert np.allclose(stored[col], expected[col], rtol=1e-9, atol=1e-12), col


def test_new_funding_events_alone_recompute_the_features_that_see_them(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES, FUNDING.iloc[:-30])
    materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    before = read_features(tmp_path / "store")
    write_funding(lake, PERP, FUNDING.iloc[-30:])  # only the funding history grows
    info = materialise(lake, SYMBOLS, "1d", PARAMS, tmp_path / "store")
    assert info["rows_computed"] > 0
    assert all(PERP.split("/")[0] in f for f in info["files"]), info["files"]  # spot symbols untouched

    fresh = materialise(_lake(tmp_path / "lake2", CANDLES), SYMBOLS, "1d", PARAMS, tmp_path / "fresh")
    assert fresh["rows"] == info["rows"]
    got, want = _files(tmp_path / "store"), _files(tmp_path / "fresh")
    assert {k: v[1] for k, v in got.items() if k.endswith(".parquet")} == \
        {k: v[1] for k, v in want.items() if k.endswith(".parquet")}
    changed = before.merge(read_features(tmp_path / "store"), on=["symbol", "timestamp"], suffixes=("", "_new"))
    assert (changed["funding_last"] != changed["funding_last_new"]).any()  # the last bars saw new events


@pytest.mark.parametrize("missing, words", [
    ("funding", ["ETH/USDT:USDT", "funding", "collect"]),
    ("BTC/USDT", ["features.cross", "BTC/USDT", "collect"]),
    ("ETH/USDT", ["features.basis", "ETH/USDT", "collect"]),
])
def test_a_missing_input_is_a_data_error_saying_what_to_collect(tmp_path, missing, words):
    candles = CANDLES if missing == "funding" else CANDLES[CANDLES["symbol"] != missing]
    lake = _lake(tmp_path / "lake", candles, None if missing == "funding" else FUNDING)
    with pytest.raises(DataError) as err:
        materialise(lake, [PERP], "1d", PARAMS, tmp_path / "store")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_the_point_in_time_check_of_the_features_stage_runs_on_the_lake_inputs(tmp_path):
    from features.materialise import read_feature_inputs
    from features.pit import check_point_in_time

    lake = _lake(tmp_path / "lake", CANDLES)
    funding, reference = read_feature_inputs(lake, SYMBOLS, "1d", PARAMS)
    assert set(funding["symbol"]) == {PERP} and len(funding) == len(FUNDING)
    assert set(reference["symbol"]) == {"BTC/USDT", "ETH/USDT"}  # cross reference + the perp's spot
    report = check_point_in_time(CANDLES, PARAMS, cuts=5, funding=funding, reference=reference)
    assert report["lookahead_violations"] == 0 and report["recursive_violations"] == 0
    with pytest.raises(DataError, match="funding"):  # without the inputs the families cannot be computed
        check_point_in_time(CANDLES, PARAMS, cuts=1)
