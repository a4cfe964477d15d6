"""materialise with the cross-venue family: Bybit's candles and funding are read from the lake's
``bybit`` venue (``bybit_root``), the stored xv columns equal ``compute_features`` with those
inputs, new Bybit candles alone recompute the features, and a lake without Bybit's series is one
DataError saying to collect it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.lake import write_candles, write_funding
from data.synthetic import generate_market
from features.compute import compute_features
from features.cross_venue import OtherVenue
from features.materialise import materialise, read_other_venue
from features.store import read_features
from qt.config import Params, SyntheticParams
from qt.errors import DataError

PERP = "ETH/USDT:USDT"
PARAMS = Params(features={"xv": True, "xv_z": [10]})
CANDLES = generate_market([PERP, "ETH/USDT"], "1d", SyntheticParams(bars=800, start="2021-01-01"), seed=9)
BYBIT = CANDLES[CANDLES["symbol"] == PERP].assign(
    close=lambda f: f["close"] * np.exp(np.random.default_rng(4).normal(0, 5e-4, len(f))))
_EVENTS = pd.date_range("2021-01-01", periods=800 * 3, freq="8h", tz="UTC").astype("datetime64[ms, UTC]")
FUNDING = pd.DataFrame({"timestamp": _EVENTS, "funding_rate": np.random.default_rng(5).normal(1e-4, 2e-4, len(_EVENTS))})
BYBIT_FUNDING = FUNDING.assign(funding_rate=FUNDING["funding_rate"] + 3e-5)


def _lake(root: Path, bybit: pd.DataFrame | None = BYBIT) -> Path:
    for sym, part in CANDLES.groupby("symbol"):
        write_candles(root, str(sym), "1d", part.drop(columns="symbol"))
    write_funding(root, PERP, FUNDING)
    if bybit is not None:
        write_candles(root, PERP, "1d", bybit.drop(columns="symbol"), venue="bybit")
        write_funding(root, PERP, BYBIT_FUNDING, venue="bybit")
    return root


def test_stored_xv_columns_equal_compute_features_with_the_bybit_series(tmp_path):
    lake = _lake(tmp_path / "lake")
    materialise(lake, [PERP, "ETH/USDT"], "1d", PARAMS, tmp_path / "store", bybit_root=lake)
    stored = read_features(tmp_path / "store")
    other = OtherVenue(BYBIT, BYBIT_FUNDING.assign(symbol=PERP))
    expected = compute_features(CANDLES, PARAMS.features, funding=FUNDING.assign(symbol=PERP), other_venue=other)
    pd.testing.assert_frame_equal(stored[["symbol", "timestamp"]], expected[["symbol", "timestamp"]])
    for col in ("xv_basis_log", "xv_funding_spread"):  # point lookups: exact in every period
        np.testing.assert_array_equal(stored[col], expected[col])
    np.testing.assert_allclose(stored["xv_basis_z_10"], expected["xv_basis_z_10"], rtol=1e-9, atol=1e-9)
    assert (stored.loc[stored["symbol"] == "ETH/USDT", "xv_basis_log"] == 0.0).all()  # spot: 0
    assert np.allclose(stored.loc[stored["symbol"] == PERP, "xv_funding_spread"], 3e-5)
    assert read_other_venue(lake, [PERP], "1d", PARAMS).candles["close"].tolist() == BYBIT["close"].tolist()


def test_new_bybit_candles_alone_recompute_the_features(tmp_path):
    lake = _lake(tmp_path / "lake", BYBIT.iloc[:-40])
    materialise(lake, [PERP], "1d", PARAMS, tmp_path / "store", bybit_root=lake)
    before = read_features(tmp_path / "store")
    write_candles(lake, PERP, "1d", BYBIT.iloc[-40:].drop(columns="symbol"), venue="bybit")
    info = materialise(lake, [PERP], "1d", PARAMS, tmp_path / "store", bybit_root=lake)
    assert info["rows_computed"] > 0
    after = read_features(tmp_path / "store")
    fresh_lake = _lake(tmp_path / "lake2")
    materialise(fresh_lake, [PERP], "1d", PARAMS, tmp_path / "fresh", bybit_root=fresh_lake)
    pd.testing.assert_frame_equal(after, read_features(tmp_path / "fresh"))
    assert not after["xv_basis_log"].iloc[-30:].equals(before["xv_basis_log"].iloc[-30:])


def test_a_lake_without_bybit_series_is_a_clear_error(tmp_path):
    lake = _lake(tmp_path / "lake", bybit=None)
    with pytest.raises(DataError, match=r"needs its Bybit 1d candles.*collect it with `qt collect --exchange bybit`"):
        materialise(lake, [PERP], "1d", PARAMS, tmp_path / "store", bybit_root=lake)
