"""The request path builds a model's input row exactly as materialisation and training do: the
multi-input families read their funding and reference candles from the same lake (a served row
equals the stored row of the same bar), a model with a return window gets its ``seq_ret_*``
columns, and a missing input or too short a history is refused with 422. No server needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, feature_columns, feature_set_hash, warmup_bars
from features.materialise import materialise
from features.sequence import window_columns
from features.store import read_features
from qt.config import FeatureParams, Params, SignalParams, SyntheticParams
from data.lake import write_candles, write_funding
from data.synthetic import generate_market
from qt.timeframes import timeframe_ms
from serving.candles import CandleCache, FundingCache
from serving.champion import LoadedModel, ModelContractError, check_model_metadata
from serving.inference import (RequestRejected, compute_signals, latest_feature_rows, min_history_bars,
                               select_inputs, select_windows)
from tests.recording_model import recording_model

PERP = "ETH/USDT:USDT"
SYMBOLS = ["BTC/USDT", "ETH/USDT", PERP]
MULTI = FeatureParams(funding_last=True, funding_mean=[3], basis=True, cross=[24])
CANDLES = generate_market(SYMBOLS, "1h", SyntheticParams(bars=1500, start="2023-12-20"), seed=5)
_EVENTS = pd.date_range("2023-12-20", periods=1500 // 8, freq="8h", tz="UTC")
FUNDING = pd.DataFrame({"timestamp": _EVENTS.astype("datetime64[ms, UTC]"),
                        "funding_rate": np.random.default_rng(9).normal(1e-4, 2e-4, len(_EVENTS))})
AS_OF = pd.Timestamp("2024-02-15T13:00:00Z")  # a bar of the second yearly period (anchored on its own)


def _lake(root: Path, candles=CANDLES, funding=FUNDING) -> Path:
    for sym, part in candles.groupby("symbol"):
        write_candles(root, str(sym), "1h", part)
    if funding is not None:
        write_funding(root, PERP, funding)
    return root


def _serve_rows(lake: Path, symbols: list[str], model: LoadedModel, as_of=AS_OF, bars: int = 400) -> pd.DataFrame:
    cache = CandleCache(lake, "1h")
    warmup = warmup_bars(model.feature_params)
    windows, _ = select_windows(cache, symbols, as_of, bars=max(bars, min_history_bars(warmup, model.sequence_length)),
                                warmup_bars=warmup, timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2,
                                sequence_length=model.sequence_length)
    funding, reference = select_inputs(cache, FundingCache(lake), windows, model.feature_params)
    return latest_feature_rows(windows, model, funding, reference)


def test_served_row_equals_the_materialised_row_of_the_same_bar(tmp_path):
    lake = _lake(tmp_path / "lake")
    params = Params(features=MULTI.model_dump())
    materialise(lake, [PERP, "ETH/USDT"], "1h", params, tmp_path / "store")
    stored = read_features(tmp_path / "store").set_index(["symbol", "timestamp"])
    served = _serve_rows(lake, [PERP, "ETH/USDT"], recording_model(MULTI))
    for _, row in served.iterrows():
        want = stored.loc[(row["symbol"], AS_OF)]
        for col in feature_columns(MULTI):
            # recursive indicators forget their start within the warm-up's declared tolerance (1e-6);
            # the funding, basis and reference-return columns are point lookups: equal
            assert row[col] == pytest.approx(want[col], rel=1e-6, abs=1e-9), (row["symbol"], col)
        for col in ("funding_last", "funding_mean_3", "basis_log", "btc_logret_24"):
            assert row[col] == want[col], (row["symbol"], col)


def test_served_funding_is_the_last_event_settled_by_the_bars_close(tmp_path):
    lake = _lake(tmp_path / "lake")
    served = _serve_rows(lake, [PERP], recording_model(MULTI)).iloc[0]
    close = AS_OF + pd.Timedelta(hours=1)
    settled = FUNDING[FUNDING["timestamp"] <= close]["funding_rate"].to_numpy()
    assert served["funding_last"] == settled[-1]
    assert served["funding_mean_3"] == pytest.approx(settled[-3:].mean(), rel=1e-12)


@pytest.mark.parametrize("missing, words", [
    ("funding", ["ETH/USDT:USDT", "funding", "collect"]),
    ("BTC/USDT", ["BTC/USDT", "collect"]),
])
def test_a_missing_input_is_refused_with_422(tmp_path, missing, words):
    candles = CANDLES if missing == "funding" else CANDLES[CANDLES["symbol"] != missing]
    lake = _lake(tmp_path / "lake", candles, None if missing == "funding" else FUNDING)
    with pytest.raises(RequestRejected) as err:
        _serve_rows(lake, [PERP], recording_model(MULTI))
    assert err.value.status == 422 and all(w in err.value.message for w in words), err.value.message


def test_a_model_with_a_return_window_gets_the_last_returns_newest_first(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES, None)
    fp, length = FeatureParams(), 16
    model = recording_model(fp, length)
    served = _serve_rows(lake, ["BTC/USDT", "ETH/USDT"], model)
    closes = CANDLES.set_index(["symbol", "timestamp"])["close"]
    for _, row in served.iterrows():
        c = closes.loc[row["symbol"]]
        c = c[c.index <= AS_OF].to_numpy()
        by_hand = np.log(c[-length:][::-1]) - np.log(c[-length - 1:-1][::-1])  # ln(c_t / c_{t-1}), newest first
        np.testing.assert_allclose(row[window_columns(length)].to_numpy(dtype=float), by_hand, rtol=0, atol=1e-12)
    # compute_signals hands the model exactly its columns, return window included
    cache = CandleCache(lake, "1h")
    windows, _ = select_windows(cache, ["BTC/USDT"], AS_OF, bars=min_history_bars(warmup_bars(fp), length),
                                warmup_bars=warmup_bars(fp), timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2,
                                sequence_length=length)
    compute_signals(windows, model, SignalParams())
    assert list(model.pyfunc.inputs[-1].columns) == list(model.feature_columns)


def test_a_model_with_exogenous_windows_gets_each_column_k_rows_earlier(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES, None)
    fp, length, exog = FeatureParams(), 12, ("rvol_24", "volz_24")
    model = recording_model(fp, length, exog)
    served = _serve_rows(lake, ["BTC/USDT"], model).iloc[0]
    # by hand: the feature rows of the same 400 BTC candles the service reads, read k rows back
    btc = CANDLES[(CANDLES["symbol"] == "BTC/USDT") & (CANDLES["timestamp"] <= AS_OF)].tail(400)
    feats = compute_features(btc, fp)
    for c in exog:
        np.testing.assert_array_equal(served[[f"seq_{c}_{k}" for k in range(length)]].to_numpy(dtype=float),
                                      feats[c].to_numpy()[::-1][:length])


def test_model_metadata_with_exogenous_windows_of_unknown_columns_is_refused():
    md = _metadata(FeatureParams(), 8)
    md["sequence_exog"] = ["not_a_feature"]
    with pytest.raises(ModelContractError, match="not_a_feature"):
        check_model_metadata("m", "1", md)


def test_too_few_candles_for_warmup_plus_return_window_is_refused(tmp_path):
    lake = _lake(tmp_path / "lake", CANDLES, None)
    fp = FeatureParams()
    first = CANDLES["timestamp"].min()
    need = min_history_bars(warmup_bars(fp), 32)
    as_of = first + pd.Timedelta(hours=need - 2)  # need - 1 candles at or before as_of
    with pytest.raises(RequestRejected) as err:
        select_windows(CandleCache(lake, "1h"), ["BTC/USDT"], as_of, bars=need, warmup_bars=warmup_bars(fp),
                       timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2, sequence_length=32)
    assert err.value.status == 422 and f"need {need}" in err.value.message
    ok, _ = select_windows(CandleCache(lake, "1h"), ["BTC/USDT"], as_of + pd.Timedelta(hours=1), bars=need,
                           warmup_bars=warmup_bars(fp), timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2,
                           sequence_length=32)
    assert len(ok["BTC/USDT"]) == need


def _metadata(fp: FeatureParams, length, columns=None) -> dict:
    md = {"feature_params": fp.model_dump(mode="json"), "feature_set_hash": feature_set_hash(fp), "timeframe": "1h",
          "feature_columns": columns if columns is not None else feature_columns(fp) + window_columns(length or 0)}
    if length is not None:
        md["sequence_length"] = length
    return md


def test_model_metadata_with_a_return_window_is_accepted_and_loaded_with_its_length():
    fp = FeatureParams()
    _, cols, _ = check_model_metadata("m", "1", _metadata(fp, 8))
    assert cols[-8:] == tuple(window_columns(8))


@pytest.mark.parametrize("length, columns, reason", [
    (None, feature_columns(FeatureParams()) + window_columns(4), "seq_ret_0"),  # window columns, no length
    (-3, feature_columns(FeatureParams()), "sequence_length"),
    ("many", feature_columns(FeatureParams()), "sequence_length"),
])
def test_model_metadata_whose_return_window_cannot_be_built_is_refused(length, columns, reason):
    with pytest.raises(ModelContractError, match=reason):
        check_model_metadata("m", "1", _metadata(FeatureParams(), length, columns))


def test_a_return_window_without_the_one_bar_return_feature_is_refused():
    fp = FeatureParams(log_return=[4])
    with pytest.raises(ModelContractError, match="logret_1"):
        check_model_metadata("m", "1", _metadata(fp, 8))
