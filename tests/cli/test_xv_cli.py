"""``qt xv report``: reads both venues from a parquet:DIR source or from the lake, prints a table
and writes reports/xv-report.json; a spot symbol, an unknown one or a missing Bybit series is one
line on stderr, exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.xv import build_report
from data import lake, perp_series
from qt.config import Params
from qt.errors import UserError
from qt.paths import StatePaths
from tests.cli.support import assert_one_line_error, run_qt

BARS = 72
TS = pd.date_range("2024-03-01", periods=BARS, freq="1h", tz="UTC").astype("datetime64[ms, UTC]")
EVENTS = pd.date_range("2024-02-29", periods=BARS // 8 + 3, freq="8h", tz="UTC").astype("datetime64[ms, UTC]")
PLANTED = np.zeros(BARS)
PLANTED[30:34] = [60.0, 75.0, 70.0, 55.0]  # above the 48 bps default round trip: one run of 4 bars
PLANTED[50] = 40.0  # below it: not an opportunity


def _candles(close: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": TS, "open": close, "high": close, "low": close, "close": close, "volume": 1.0})


def _funding(rate: float) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": EVENTS, "funding_rate": rate})


BINANCE = _candles(np.full(BARS, 3000.0))
BYBIT = _candles(3000.0 * np.exp(PLANTED / 1e4))


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    files = {"ohlcv/binanceusdm/ETH_USDT-1h.parquet": BINANCE, "ohlcv/bybit/ETH_USDT-1h.parquet": BYBIT,
             "funding/binanceusdm/ETH_USDT-funding.parquet": _funding(1e-4),
             "funding/bybit/ETH_USDT-funding.parquet": _funding(1.5e-4),
             "ohlcv/binanceusdm/BTC_USDT-1h.parquet": BINANCE}  # BTC: Binance only
    for name, frame in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / name, index=False)
    return root


def test_report_from_a_parquet_dir_finds_the_planted_run(tmp_path, datadir):
    res = run_qt(["xv", "report", "--symbols", "ETH/USDT:USDT", "--source", f"parquet:{datadir}",
                  "--start", "2024-03-01", "--end", "2024-03-04"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "ETH/USDT:USDT" in res.stdout and "2024-03" in res.stdout
    report = json.loads((tmp_path / "reports" / "xv-report.json").read_text())
    eth = report["symbols"]["ETH/USDT:USDT"]
    assert report["costs"]["round_trip_bps"] == 48.0
    assert eth["opportunities"] == [{"start": "2024-03-02T06:00:00Z", "end": "2024-03-02T09:00:00Z", "bars": 4,
                                     "peak_bps": pytest.approx(75.0), "side": "bybit_rich",
                                     "capturable_bps": pytest.approx(27.0)}]
    assert eth["funding_spread"]["mean_bps_per_8h"] == pytest.approx(0.5)
    assert eth["basis_bps"]["bars"] == BARS


@pytest.mark.parametrize("symbols, fragment", [
    ("ETH/USDT", "write it as ETH/USDT:USDT"),
    ("DOGE/USDT:USDT", "no binance 1h candles"),
    ("BTC/USDT:USDT", "collect it with `qt collect --exchange bybit`"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, datadir, symbols, fragment):
    res = run_qt(["xv", "report", "--symbols", symbols, "--source", f"parquet:{datadir}"], tmp_path)
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "reports" / "xv-report.json").exists()


def test_report_from_the_lake_reads_bybit_from_its_venue_root(tmp_path):
    params = Params().model_copy(update={"data": Params().data.model_copy(update={"source": "ccxt"})})
    paths = StatePaths(tmp_path).ensure()
    from data.sources import lake_root, venue_lake_root

    binance_root, bybit_root = lake_root(params, paths), venue_lake_root(params, paths, "bybit")
    lake.write_candles(binance_root, "ETH/USDT:USDT", "1h", BINANCE)
    perp_series.write_funding(binance_root, "ETH/USDT:USDT", _funding(1e-4))
    with pytest.raises(UserError, match="collect it with `qt collect --exchange bybit`"):
        build_report(params, paths, ["ETH/USDT:USDT"], "2024-03-01", "2024-03-04")
    lake.write_candles(bybit_root, "ETH/USDT:USDT", "1h", BYBIT, venue="bybit")
    perp_series.write_funding(bybit_root, "ETH/USDT:USDT", _funding(2e-4), venue="bybit")
    report = build_report(params, paths, ["ETH/USDT:USDT"], "2024-03-01", "2024-03-04")
    eth = report["symbols"]["ETH/USDT:USDT"]
    assert eth["opportunity_count"] == 1 and eth["funding_spread"]["mean_bps_per_8h"] == pytest.approx(1.0)
