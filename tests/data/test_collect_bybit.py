"""Collecting Bybit's USDT perpetuals from the local exchange's v5 API through the real ccxt ``bybit``.

The source is a data dir in the ``../shared/data`` layout (``ohlcv/bybit``, ``funding/bybit``)
written with plain pandas; what the collector stores is compared with those files read back.
Bybit pages differently from Binance (kline and funding pages are windows answered newest first,
funding at most 200 rows), so the source is long enough for several pages of each and its funding
has a pause longer than one 200-settlement window.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data import lake, perp_series
from data.collector import collect_universe
from data.sources import venue_lake_root
from exchange import LocalExchange
from flows import stages
from qt.config import load_params
from qt.errors import DataError
from qt.paths import StatePaths
from tests.cli.support import assert_one_line_error, run_qt
from tests.data.support import collect_params

pytestmark = pytest.mark.slow

SYMBOL = "BTC/USDT:USDT"
BARS = 4000  # four kline pages of 1000, to 2024-06-15
NOW = "2024-07-01T00:00:00"


def _bybit_source(src):
    rng = np.random.default_rng(3)
    ts = pd.date_range("2024-01-01", periods=BARS, freq="1h", tz="UTC").astype("datetime64[ms, UTC]")
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.004, BARS)))
    candles = pd.DataFrame({"timestamp": ts, "open": close * 0.999, "high": close * 1.002, "low": close * 0.997,
                            "close": close, "volume": rng.uniform(10, 50, BARS)})
    (src / "ohlcv" / "bybit").mkdir(parents=True)
    candles.to_parquet(src / "ohlcv" / "bybit" / "BTC_USDT-1h.parquet", index=False)
    mark = candles[["timestamp", "open", "high", "low", "close"]]
    mark.to_parquet(src / "ohlcv" / "bybit" / "BTC_USDT-1h-mark.parquet", index=False)
    settle = pd.date_range(ts[0], ts[-1], freq="8h").astype("datetime64[ms, UTC]")
    # a 71-day pause in settlements: longer than one funding window (200 x 8 h = 66.7 days); after it
    # 91 days without one, so a window holds a full page of 200 and the rest is asked for again
    settle = settle[(settle < pd.Timestamp("2024-01-05", tz="UTC")) | (settle >= pd.Timestamp("2024-03-16", tz="UTC"))]
    funding = pd.DataFrame({"timestamp": settle, "funding_rate": rng.normal(1e-4, 1e-4, len(settle))})
    (src / "funding" / "bybit").mkdir(parents=True)
    funding.to_parquet(src / "funding" / "bybit" / "BTC_USDT-funding.parquet", index=False)
    # the same perpetual on Binance, a hair cheaper: what the pipeline decides on
    (src / "ohlcv" / "binanceusdm").mkdir(parents=True)
    binance = candles.assign(**{c: candles[c] * 0.9999 for c in ("open", "high", "low", "close")})
    binance.to_parquet(src / "ohlcv" / "binanceusdm" / "BTC_USDT-1h.parquet", index=False)
    return candles, funding


@pytest.fixture(scope="module")
def bybit_source(tmp_path_factory):
    src = tmp_path_factory.mktemp("bybit-src")
    return src, *_bybit_source(src)


@pytest.fixture(scope="module")
def bybit_exchange(bybit_source):
    src, candles, funding = bybit_source
    with LocalExchange(src, now=NOW, log_path=src / "exchange.log") as ex:
        yield ex, candles, funding


def test_every_candle_and_settlement_arrives_and_a_rerun_adds_nothing(bybit_exchange, tmp_path):
    ex, candles, funding = bybit_exchange
    params = collect_params(ex.url, [SYMBOL], exchange="bybit", backfill_start="2023-12-01")
    report = collect_universe(params, tmp_path, progress=False)
    assert report.ok, report.to_dict()
    stored = lake.read_symbol(tmp_path, SYMBOL, "1h", venue="bybit")
    pd.testing.assert_frame_equal(stored, candles)
    pd.testing.assert_frame_equal(perp_series.read_funding(tmp_path, SYMBOL, venue="bybit"), funding)
    first = report.symbols[0]
    assert first.rows_added == BARS and first.funding_rows_added == len(funding)
    assert not (tmp_path / "ohlcv" / "binanceusdm").exists(), "Bybit's candles went into Binance's folder"

    again = collect_universe(params, tmp_path, progress=False)
    assert again.ok and again.symbols[0].rows_added == 0 and again.symbols[0].funding_rows_added == 0


def test_qt_collect_exchange_bybit_records_its_own_report(bybit_exchange, tmp_path):
    ex, candles, _ = bybit_exchange
    home = tmp_path / "home"
    res = run_qt(["collect", "--source", "ccxt", "--exchange", "bybit", "--exchange-url", ex.url,
                  "--symbols", SYMBOL, "--start", "2024-01-01"], home)
    assert res.returncode == 0, res.stderr[-2000:]
    reports = home / "reports"
    assert (reports / "collect-bybit.json").is_file() and not (reports / "collect.json").exists()
    spot = run_qt(["collect", "--source", "ccxt", "--exchange", "bybit", "--exchange-url", ex.url,
                   "--symbols", "BTC/USDT"], home)
    assert_one_line_error(spot, "BASE/USDT:USDT")


def test_with_the_cross_venue_features_on_the_collect_stage_brings_bybits_series_too(bybit_source, tmp_path):
    src, candles, funding = bybit_source
    on = load_params(None, {"data": {"source": f"parquet:{src}", "symbols": [SYMBOL], "start": "2024-01-01"},
                            "features": {"xv": True}})
    paths = StatePaths(tmp_path).ensure()
    result = stages.collect(on, paths)
    assert result["data"]["cross_venue"]["rows"] == BARS
    root = venue_lake_root(on, paths, "bybit")
    pd.testing.assert_frame_equal(lake.read_symbol(root, SYMBOL, "1h", venue="bybit"), candles)
    pd.testing.assert_frame_equal(perp_series.read_funding(root, SYMBOL, venue="bybit"), funding)
    assert (paths.reports / "collect-bybit.json").is_file()
    assert json.loads((paths.reports / "collect.json").read_text())["data"]["cross_venue"]["rows"] == BARS

    synthetic = load_params(None, {"data": {"source": "synthetic:3", "symbols": [SYMBOL]},
                                   "synthetic": {"bars": 300}, "features": {"xv": True}})
    with pytest.raises(DataError, match="synthetic market has not"):
        stages.collect(synthetic, StatePaths(tmp_path / "other").ensure())
