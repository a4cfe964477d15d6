"""One lake root keeps the same perpetual on two venues apart (Binance USDT-M and Bybit), so the
cross-venue features can join them bar for bar, and a Bybit spot symbol is refused by name."""

import numpy as np
import pandas as pd
import pytest

from data import lake, perp_series
from data.sources import venue_lake_root
from qt.config import Params
from qt.errors import DataError
from qt.paths import StatePaths


def _candles(close: float, periods: int = 30) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=periods, freq="1h", tz="UTC")
    c = close + np.arange(periods, dtype=float)
    return pd.DataFrame({"timestamp": ts, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0})


def test_the_same_perpetual_on_binance_and_bybit_is_stored_and_read_apart(tmp_path):
    lake.write_candles(tmp_path, "BTC/USDT:USDT", "1h", _candles(100.0))
    lake.write_candles(tmp_path, "BTC/USDT:USDT", "1h", _candles(200.0), venue="bybit")
    binance = lake.read_candles(tmp_path, ["BTC/USDT:USDT"], "1h")
    bybit = lake.read_candles(tmp_path, ["BTC/USDT:USDT"], "1h", venue="bybit")
    assert binance["close"].iloc[0] == 100.0 and bybit["close"].iloc[0] == 200.0
    assert (tmp_path / "ohlcv" / "bybit" / "BTC_USDT" / "1h").is_dir()
    assert lake.available_symbols(tmp_path, "1h", venue="bybit") == ["BTC/USDT:USDT"]
    funding = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=3, freq="8h", tz="UTC"),
                            "funding_rate": [1e-4, 2e-4, 3e-4]})
    perp_series.write_funding(tmp_path, "BTC/USDT:USDT", funding, venue="bybit")
    assert perp_series.read_funding(tmp_path, "BTC/USDT:USDT").empty
    assert perp_series.read_funding(tmp_path, "BTC/USDT:USDT", venue="bybit")["funding_rate"].tolist() == \
        [1e-4, 2e-4, 3e-4]


def test_a_spot_symbol_on_bybit_is_refused_with_the_form_to_use(tmp_path):
    with pytest.raises(DataError, match="BASE/USDT:USDT"):
        lake.write_candles(tmp_path, "BTC/USDT", "1h", _candles(1.0), venue="bybit")


def test_file_sources_keep_both_venues_under_one_root_and_the_real_venues_apart(tmp_path):
    paths = StatePaths(tmp_path)
    on_files = Params().model_copy(update={"data": Params().data.model_copy(update={"source": f"parquet:{tmp_path}"})})
    (tmp_path / "ohlcv").mkdir()
    assert venue_lake_root(on_files, paths, "bybit") == venue_lake_root(on_files, paths, "binance")
    live = Params().model_copy(update={"data": Params().data.model_copy(update={"source": "ccxt"})})
    assert venue_lake_root(live, paths, "bybit").name == "bybit"
    assert venue_lake_root(live, paths, "binance").name == "binance"
