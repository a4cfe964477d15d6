"""materialise with the order-book family on the shared six-minute recording of the BTCUSDT perpetual
(2024-08-08 23:54:13 -> 23:59:59 on the recorder's clock, ~1.27 s behind Binance's): of a month and
a half of real 1h bars only the one whose close the recording covers - the bar opening 23:00,
closing 2024-08-09 00:00 - gets a book value, so it is the only row stored; a lake without a
recording is one DataError saying how to record one; a rewritten recording alone recomputes the
features (the manifest fingerprints each symbol's recorded levels and trades)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.lake import write_candles
from features.materialise import materialise
from features.store import read_features
from qt.config import Params
from qt.errors import DataError
from tests.cli.support import run_qt
from tests.features.book_support import record_book

PERP = "BTC/USDT:USDT"
PARAMS = Params(features={"book": True})


def _lake_with_recording(tmp_path):
    from data.lake import read_datadir_candles
    from tests.support import require_orderbook_recording, require_shared_data

    shared, raw = require_shared_data(), require_orderbook_recording("binanceusdm")
    lake = tmp_path / "lake"
    res = run_qt(["record-book", "--from-file", str(raw), "--venue", "binanceusdm", "--symbols", "BTC/USDT",
                  "--lake", str(lake)], tmp_path / "home")
    assert res.returncode == 0, res.stderr
    bars = read_datadir_candles(shared, [PERP], "1h")
    bars = bars[(bars["timestamp"] >= "2024-07-01") & (bars["timestamp"] < "2024-08-16")]
    write_candles(lake, PERP, "1h", bars.drop(columns="symbol"))
    return lake, bars


@pytest.mark.shared_data
def test_only_the_bar_whose_close_the_recording_covers_gets_a_book_value(tmp_path):
    lake, bars = _lake_with_recording(tmp_path)
    out = materialise(lake, [PERP], "1h", PARAMS, tmp_path / "store", workers=1)
    stored = read_features(tmp_path / "store")
    assert len(bars) > 1000 and out["rows"] == 1
    assert stored["timestamp"].tolist() == [pd.Timestamp("2024-08-08 23:00", tz="UTC")]
    row = stored.iloc[0]
    # the close is on the recording's event-clock grid: the sample at exactly 00:00:00, read from levels.parquet
    levels = pd.read_parquet(next(lake.rglob("levels.parquet")))
    at = levels[levels["ts_ms"] == pd.Timestamp("2024-08-09", tz="UTC").value // 1_000_000]
    bid, ask = (at[(at["side"] == s) & (at["rank"] == 0)]["price"].iloc[0] for s in (1, -1))
    assert row["book_spread_bps"] == pytest.approx((ask - bid) / ((ask + bid) / 2) * 1e4)
    assert row["book_spread_bps"] >= 0.10 / 62_000 * 1e4 * 0.99  # at least one 0.10 USDT tick
    assert -1 <= row["book_imbalance_5"] <= 1 and -1 <= row["book_flow_10s"] <= 1
    assert np.isfinite(row[["book_microprice_bps", "rsi_14"]].to_numpy(dtype=float)).all()


def test_a_lake_without_a_recording_is_one_data_error_saying_how_to_record(tmp_path):
    from data.synthetic import generate_market
    from qt.config import SyntheticParams

    bars = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=400, start="2024-01-01"), seed=1)
    write_candles(tmp_path / "lake", "BTC/USDT", "1h", bars.drop(columns="symbol"))
    with pytest.raises(DataError, match="qt record-book --from-file"):
        materialise(tmp_path / "lake", ["BTC/USDT"], "1h", PARAMS, tmp_path / "store", workers=1)


def test_a_rewritten_recording_alone_recomputes_the_book_features(tmp_path):
    from data.synthetic import generate_market
    from qt.config import SyntheticParams

    bars = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=400, start="2024-01-01"), seed=1)
    close_ms = (bars["timestamp"].max() + pd.Timedelta("1h")).value // 1_000_000
    write_candles(tmp_path / "lake", "BTC/USDT", "1h", bars.drop(columns="symbol"))
    record_book(tmp_path / "lake", close_ms, ask=101.0)
    params = Params(features={"book": True, "book_lake": str(tmp_path / "lake")})
    first = materialise(tmp_path / "lake", ["BTC/USDT"], "1h", params, tmp_path / "store", workers=1)
    again = materialise(tmp_path / "lake", ["BTC/USDT"], "1h", params, tmp_path / "store", workers=1)
    assert first["rows"] == 1 and first["rows_computed"] > 0 and again["rows_computed"] == 0
    record_book(tmp_path / "lake", close_ms, ask=102.0)
    after = materialise(tmp_path / "lake", ["BTC/USDT"], "1h", params, tmp_path / "store", workers=1)
    assert after["rows_computed"] > 0
    assert read_features(tmp_path / "store")["book_spread_bps"].iat[0] == pytest.approx(2 / 101 * 1e4)
