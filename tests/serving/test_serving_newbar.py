"""The new-bar path of ``/signals`` (``serving.newbar``): on a cache miss the engine computes all
symbols' rows at once, and every row - features, return and exogenous windows, ATR, bar time -
equals the full recompute (``latest_feature_rows``: ``compute_features`` over the window plus
``add_return_windows``) exactly, at random cut points, window lengths, symbol sets, gaps and
models; what it cannot answer exactly goes to the full path."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import serving.engine as engine_module
from data.lake import write_candles
from data.synthetic import generate_market
from features.compute import feature_columns, warmup_bars
from features.sequence import all_window_columns
from qt.config import FeatureParams, HtfFeatureParams, ServingParams, SignalParams, SyntheticParams
from qt.timeframes import timeframe_ms
from serving.champion import LoadedModel
from serving.engine import SignalEngine
from serving.inference import latest_feature_rows, min_history_bars, plan_windows

BARS = 800
SYMBOLS = ["A/USDT", "B/USDT", "C/USDT", "LATE/USDT", "GAPPY/USDT"]
LATE_BARS = 430  # LATE's history starts later: its windows are shorter early on (a second panel length)
GAP = slice(500, 507)  # GAPPY lacks these bars (an exchange outage): indicators count rows, not time


class _Mean:
    """pyfunc stand-in: prob_up from the mean of the row (finite, in [0, 1])."""

    def predict(self, frame):
        x = frame.to_numpy().mean(axis=1)
        return pd.DataFrame({"prob_up": 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50))), "expected_return": x})


def _model(fp: FeatureParams, length: int, exog: tuple[str, ...] = ()) -> LoadedModel:
    columns = feature_columns(fp) + (all_window_columns(length, exog) if length else [])
    return LoadedModel(name="m", version="1", alias="champion", pyfunc=_Mean(), metadata={}, feature_params=fp,
                       feature_columns=tuple(columns), timeframe="1h", sequence_length=length,
                       sequence_exog=exog if length else ())


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("newbar-lake")
    candles = generate_market(SYMBOLS, "1h", SyntheticParams(bars=BARS), seed=5)
    for sym, part in candles.groupby("symbol"):
        part = part.reset_index(drop=True)
        if sym == "LATE/USDT":
            part = part.iloc[BARS - LATE_BARS:]
        if sym == "GAPPY/USDT":
            part = part.drop(index=range(GAP.start, GAP.stop))
        write_candles(root, str(sym), "1h", part)
    return root, pd.DatetimeIndex(sorted(candles["timestamp"].unique()))


def _full(engine: SignalEngine, model: LoadedModel, symbols: list[str], as_of: pd.Timestamp, history: int):
    """The reference: the windows the engine plans, through ``latest_feature_rows``."""
    warmup = warmup_bars(model.feature_params)
    atr_need = 0 if engine.atr_period is None else engine._atr_warmup(model.feature_params) + 1
    spans, _ = plan_windows(engine.candles("1h"), symbols, as_of,
                            bars=max(history, min_history_bars(warmup, model.sequence_length), atr_need),
                            warmup_bars=warmup, timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2,
                            sequence_length=model.sequence_length)
    return latest_feature_rows({s: sp.frame() for s, sp in spans.items()}, model, atr_period=engine.atr_period)


MODELS = {
    "default_64_exog": (FeatureParams(), 64, ("rvol_24", "volz_24")),
    "default_no_window": (FeatureParams(), 0, ()),
    "shape_8": (FeatureParams(candle_shape=True, atr=[7]), 8, ("body_frac",)),
}

cases = st.fixed_dictionaries({
    "model": st.sampled_from(sorted(MODELS)),
    "cut": st.floats(0.0, 1.0),  # where as_of falls among the bars that have enough history
    "history": st.sampled_from([340, 400, 455]),
    "symbols": st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=5, unique=True),
    "atr_period": st.sampled_from([None, 14, 7, 10, 40]),  # in the set, added to it, or an ATR of its own
})


def _check(lake, case: dict) -> None:
    root, bars = lake
    fp, length, exog = MODELS[case["model"]]
    model = _model(fp, length, exog)
    need = max(min_history_bars(warmup_bars(fp), length), case["history"])
    first = BARS - LATE_BARS + need  # LATE has enough history from here on
    as_of = bars[min(BARS - 1, first + int(case["cut"] * (BARS - first)))]
    engine = SignalEngine(root, ServingParams(history_bars=case["history"], max_staleness_bars=2), SignalParams(),
                          atr_period=case["atr_period"])
    used: list[bool] = []
    real = engine_module.panel_rows

    def spy(*args, **kwargs):
        got = real(*args, **kwargs)
        used.append(got is not None)
        return got

    engine_module.panel_rows = spy
    try:
        signals, _ = engine.signals(model, case["symbols"], as_of.isoformat())
        rows = engine.feature_rows(model, plan_windows(
            engine.candles("1h"), case["symbols"], as_of, bars=need if case["atr_period"] is None else
            max(need, engine._atr_warmup(fp) + 1), warmup_bars=warmup_bars(fp), timeframe_ms=timeframe_ms("1h"),
            max_staleness_bars=2, sequence_length=length)[0])
    finally:
        engine_module.panel_rows = real
    assert used == [True]  # a candle-only model: computed by the panel, then cached
    full = _full(engine, model, case["symbols"], as_of, case["history"])
    np.testing.assert_array_equal(np.vstack([r.values for r in rows]),
                                  full.loc[:, list(model.feature_columns)].to_numpy(dtype=np.float64))
    assert [s["feature_timestamp"] for s in signals] == [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in full["timestamp"]]
    if case["atr_period"] is not None:
        np.testing.assert_array_equal([r.atr for r in rows], full["atr"].to_numpy(dtype=np.float64))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(case=cases)
def test_the_new_bar_rows_equal_the_full_recompute_at_random_cut_points(lake, case):
    _check(lake, case)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=cases)
def test_the_new_bar_rows_equal_the_full_recompute_at_many_cut_points(lake, case):
    _check(lake, case)


@pytest.mark.parametrize("fp", [FeatureParams(htf=[HtfFeatureParams(timeframe="4h", rsi=[14], atr=[14],
                                                                    log_return=[1])], warmup_memories=4.0),
                                FeatureParams(cross=[24], cross_reference="A/USDT")],
                         ids=["htf", "cross_asset"])
def test_a_model_the_panel_does_not_support_takes_the_full_path_with_the_same_answer(lake, fp, monkeypatch):
    root, bars = lake
    calls: list[list[str]] = []
    real = engine_module.latest_feature_rows

    def spy(windows, *args, **kwargs):
        calls.append(list(windows))
        return real(windows, *args, **kwargs)

    monkeypatch.setattr(engine_module, "latest_feature_rows", spy)
    model = _model(fp, 8)
    engine = SignalEngine(root, ServingParams(), SignalParams())
    symbols = ["B/USDT", "C/USDT"]
    rows = engine.feature_rows(model, plan_windows(
        engine.candles("1h"), symbols, bars[-1], bars=max(400, engine._atr_warmup(fp) + 1,
                                                          min_history_bars(warmup_bars(fp), 8)),
        warmup_bars=warmup_bars(fp), timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2, sequence_length=8)[0])
    assert calls == [symbols]
    assert np.isfinite(np.vstack([r.values for r in rows])).all()


def test_a_rewritten_candle_is_recomputed_and_still_equals_the_full_recompute(tmp_path):
    candles = generate_market(["A/USDT", "B/USDT"], "1h", SyntheticParams(bars=500), seed=9)
    for sym, part in candles.groupby("symbol"):
        write_candles(tmp_path, str(sym), "1h", part)
    model = _model(FeatureParams(), 16, ("rvol_24",))
    engine = SignalEngine(tmp_path, ServingParams(), SignalParams())
    as_of = candles["timestamp"].max()
    before, _ = engine.signals(model, ["A/USDT", "B/USDT"], as_of.isoformat())
    repaired = candles[(candles["symbol"] == "A/USDT")].tail(3).copy()
    repaired["close"] *= 1.01
    repaired["high"] = repaired[["high", "close"]].max(axis=1)
    write_candles(tmp_path, "A/USDT", "1h", repaired)
    after, _ = engine.signals(model, ["A/USDT", "B/USDT"], as_of.isoformat())
    assert after[0]["confidence"] != before[0]["confidence"] and after[1] == before[1]
    full = _full(engine, model, ["A/USDT", "B/USDT"], as_of, 400)
    expected = model.pyfunc.predict(full[list(model.feature_columns)])
    assert [s["confidence"] for s in after] == expected["prob_up"].tolist()


def test_the_background_refresh_reads_what_the_collector_appended_so_the_batch_reads_nothing(tmp_path, monkeypatch):
    import serving.candles as candles_module
    from serving.refresher import Refresher

    candles = generate_market(["A/USDT", "B/USDT"], "1h", SyntheticParams(bars=400), seed=3)
    parts = {str(sym): part for sym, part in candles.groupby("symbol")}
    for sym, part in parts.items():
        write_candles(tmp_path, sym, "1h", part.iloc[:-1])
    model = _model(FeatureParams(), 8)
    engine = SignalEngine(tmp_path, ServingParams(history_bars=300), SignalParams())
    assert engine.refresh_candles() == 0  # no batch asked yet: nothing to keep read
    engine.signals(model, list(parts), None)
    assert engine.refresh_candles() == 0  # nothing changed
    for sym, part in parts.items():
        write_candles(tmp_path, sym, "1h", part.iloc[-1:])
    reads: list[str] = []
    real = candles_module.read_symbol
    monkeypatch.setattr(candles_module, "read_symbol", lambda root, sym, tf, *venue: reads.append(sym) or real(root, sym, tf, *venue))
    refresher = Refresher(engine.refresh_candles, 0.01).start()
    try:
        for _ in range(500):
            if len(reads) == 2:
                break
            threading.Event().wait(0.01)
    finally:
        refresher.stop()
    assert sorted(reads) == sorted(parts)  # each appended file re-read once, in the background
    signals, _ = engine.signals(model, list(parts), None)
    assert sorted(reads) == sorted(parts)  # the batch read nothing more
    assert {s["feature_timestamp"] for s in signals} == {candles["timestamp"].max().strftime("%Y-%m-%dT%H:%M:%SZ")}
    fresh = SignalEngine(tmp_path, ServingParams(history_bars=300), SignalParams())
    assert fresh.signals(model, list(parts), None)[0] == signals  # the same answer as reading on request
