"""The service joins the order-book family from the same recordings as materialisation: the served
row of the bar whose close a recording covers equals the stored row and the sample at that close,
and a rewritten recording changes the next answer (the row cache keys on the recording's files)."""

from __future__ import annotations

import pandas as pd
import pytest

from data.lake import write_candles
from data.synthetic import generate_market
from features.materialise import materialise
from features.store import read_features
from qt.config import FeatureParams, Params, ServingParams, SignalParams, SyntheticParams
from serving.engine import SignalEngine
from tests.features.book_support import record_book
from tests.recording_model import recording_model

BOOK = FeatureParams(book=True, book_levels=1)
CANDLES = generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=500, start="2024-01-20"), seed=5)
LAST = CANDLES["timestamp"].max()
CLOSE_MS = (LAST + pd.Timedelta("1h")).value // 1_000_000


def test_the_served_book_row_equals_the_stored_row_and_a_new_recording_changes_it(tmp_path):
    write_candles(tmp_path, "BTC/USDT", "1h", CANDLES.drop(columns="symbol"))
    record_book(tmp_path, CLOSE_MS, ask=101.0)
    materialise(tmp_path, ["BTC/USDT"], "1h", Params(features=BOOK.model_dump()), tmp_path / "store")
    stored = read_features(tmp_path / "store")
    assert stored["timestamp"].tolist() == [LAST]  # the only close a sample covers
    engine = SignalEngine(tmp_path, ServingParams(history_bars=350, max_staleness_bars=2), SignalParams())
    model = recording_model(BOOK)
    when = LAST.strftime("%Y-%m-%dT%H:%M:%SZ")
    engine.signals(model, ["BTC/USDT"], when)
    served = model.pyfunc.inputs[-1].iloc[0]
    for col in ("book_spread_bps", "book_imbalance_1", "book_microprice_bps", "book_flow_10s"):
        assert served[col] == stored[col].iat[0], col
    assert served["book_spread_bps"] == pytest.approx(1 / 100.5 * 1e4)  # (101 - 100) / 100.5
    assert served["book_imbalance_1"] == 0.5 and served["book_flow_10s"] == 0.5  # (3 - 1) / 4 each
    record_book(tmp_path, CLOSE_MS, ask=102.0)
    engine.signals(model, ["BTC/USDT"], when)
    assert model.pyfunc.inputs[-1]["book_spread_bps"].iat[0] == pytest.approx(2 / 101 * 1e4)
