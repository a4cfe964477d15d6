"""The feature-row cache of ``/signals`` (``serving.engine``) never serves a stale row: a candle
appended to the lake, a moved ``as_of``, a new funding event or another model each change the next
answer, and every answer equals the one computed from scratch by the one feature code path.
No server needed: the engine is what the service calls per request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import serving.engine as engine_module
from features.compute import feature_columns, warmup_bars
from features.sequence import window_columns
from qt.config import FeatureParams, ServingParams, SignalParams, SyntheticParams
from data.lake import write_candles, write_funding
from data.synthetic import generate_market
from qt.timeframes import timeframe_ms
from serving.candles import CandleCache, FundingCache
from serving.champion import LoadedModel
from serving.engine import RowsNotCached, SignalEngine
from serving.inference import RequestRejected, latest_feature_rows, min_history_bars, select_inputs, select_windows

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
BARS = 500
CANDLES = generate_market(SYMBOLS, "1h", SyntheticParams(bars=BARS + 1), seed=21)  # the last bar arrives later
LAST = CANDLES["timestamp"].max() - pd.Timedelta(hours=1)  # newest bar before the append
SERVING = ServingParams(history_bars=350, max_staleness_bars=2)


class _Momentum:
    """pyfunc stand-in: prob_up = sigmoid(50 * logret_4), expected_return = the window's mean
    return (when it has one); records every input frame."""

    def __init__(self):
        self.inputs: list[pd.DataFrame] = []

    def predict(self, frame):
        self.inputs.append(frame.copy())
        x = frame["logret_4"].to_numpy()
        window = [c for c in frame.columns if c.startswith("seq_ret_")]
        er = frame[window].to_numpy().mean(axis=1) if window else 0.5 * x
        return pd.DataFrame({"prob_up": 1.0 / (1.0 + np.exp(-50.0 * x)), "expected_return": er})


def _model(fp: FeatureParams = FeatureParams(), sequence_length: int = 8, version: str = "1") -> LoadedModel:
    return LoadedModel(name="m", version=version, alias="champion", pyfunc=_Momentum(), metadata={},
                       feature_params=fp, feature_columns=tuple(feature_columns(fp) + window_columns(sequence_length)),
                       timeframe="1h", sequence_length=sequence_length)


def _write(lake, candles: pd.DataFrame) -> None:
    for sym, part in candles.groupby("symbol"):
        write_candles(lake, str(sym), "1h", part)


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_scratch(lake, model: LoadedModel, symbols, as_of: pd.Timestamp) -> list[dict]:
    """The answer of a fresh engine's building blocks, no cache: windows -> features -> model."""
    cache = CandleCache(lake, "1h")
    warmup = warmup_bars(model.feature_params)
    windows, _ = select_windows(cache, symbols, as_of, bars=max(SERVING.history_bars,
                                                                min_history_bars(warmup, model.sequence_length)),
                                warmup_bars=warmup, timeframe_ms=timeframe_ms("1h"), max_staleness_bars=2,
                                sequence_length=model.sequence_length)
    funding, reference = select_inputs(cache, FundingCache(lake), windows, model.feature_params)
    rows = latest_feature_rows(windows, model, funding, reference)
    pred = model.pyfunc.predict(rows[list(model.feature_columns)])
    return [{"symbol": s, "confidence": float(p), "expected_return": float(e), "feature_timestamp": _iso(t)}
            for s, p, e, t in zip(symbols, pred["prob_up"], pred["expected_return"], rows["timestamp"])]


def _essentials(signals: list[dict]) -> list[dict]:
    return [{k: s[k] for k in ("symbol", "confidence", "expected_return", "feature_timestamp")} for s in signals]


@pytest.fixture
def counted(monkeypatch):
    """Counts the symbols whose rows the engine computes (cache misses), whichever way it
    computes them (``serving.newbar`` or ``latest_feature_rows``)."""
    computed: list[list[str]] = []
    real = engine_module.SignalEngine.compute_rows

    def spy(self, model, spans, *args, **kwargs):
        computed.append(list(spans))
        return real(self, model, spans, *args, **kwargs)

    monkeypatch.setattr(engine_module.SignalEngine, "compute_rows", spy)
    return computed


def test_a_repeated_request_is_served_from_the_cache_and_equals_the_row_from_scratch(tmp_path, counted):
    _write(tmp_path, CANDLES[CANDLES["timestamp"] <= LAST])
    engine, model = SignalEngine(tmp_path, SERVING, SignalParams()), _model()
    first, _ = engine.signals(model, SYMBOLS, None)
    again, _ = engine.signals(model, SYMBOLS, None)
    assert counted == [SYMBOLS]  # computed once, then both rows were hits
    assert again == first
    assert _essentials(again) == _from_scratch(tmp_path, model, SYMBOLS, LAST)
    # the cached rows reach the model unchanged: same input frame both times
    pd.testing.assert_frame_equal(model.pyfunc.inputs[-1], model.pyfunc.inputs[-2])


def test_a_cached_only_request_computes_nothing_and_equals_the_computed_answer(tmp_path, counted):
    """What the service answers on its event loop: rows from the cache, or ``RowsNotCached``
    (the computation then runs in a worker thread); a bad request is refused either way."""
    _write(tmp_path, CANDLES[CANDLES["timestamp"] <= LAST])
    engine, model = SignalEngine(tmp_path, SERVING, SignalParams()), _model()
    with pytest.raises(RowsNotCached):
        engine.signals(model, SYMBOLS, None, compute=False)
    assert counted == [] and model.pyfunc.inputs == []
    first, _ = engine.signals(model, SYMBOLS, None)
    again, _ = engine.signals(model, SYMBOLS, None, compute=False)
    assert again == first and counted == [SYMBOLS]
    engine.signals(model, ["BTC/USDT"], _iso(LAST - pd.Timedelta(hours=1)))
    with pytest.raises(RowsNotCached):  # ETH's row of that bar is not cached: no half answer
        engine.signals(model, SYMBOLS, _iso(LAST - pd.Timedelta(hours=1)), compute=False)
    with pytest.raises(RequestRejected) as err:
        engine.signals(model, ["NOPE/USDT"], None, compute=False)
    assert err.value.status == 404


def test_a_candle_appended_to_the_lake_changes_the_next_answer(tmp_path, counted):
    _write(tmp_path, CANDLES[CANDLES["timestamp"] <= LAST])
    engine, model = SignalEngine(tmp_path, SERVING, SignalParams()), _model()
    before, _ = engine.signals(model, SYMBOLS, None)
    assert {s["feature_timestamp"] for s in before} == {_iso(LAST)}
    _write(tmp_path, CANDLES)  # the collector appends the next bar
    after, _ = engine.signals(model, SYMBOLS, None)
    newest = LAST + pd.Timedelta(hours=1)
    assert {s["feature_timestamp"] for s in after} == {_iso(newest)}
    assert _essentials(after) == _from_scratch(tmp_path, model, SYMBOLS, newest)
    assert [s["confidence"] for s in after] != [s["confidence"] for s in before]
    assert counted == [SYMBOLS, SYMBOLS]


def test_an_appended_candle_invalidates_even_an_unmoved_as_of_window_only_for_that_symbol(tmp_path, counted):
    """A write re-reads the symbol (new generation); its row at the same as_of is recomputed and
    equal, the other symbol stays a hit."""
    _write(tmp_path, CANDLES[CANDLES["timestamp"] <= LAST])
    engine, model = SignalEngine(tmp_path, SERVING, SignalParams()), _model()
    at = _iso(LAST)
    before, _ = engine.signals(model, SYMBOLS, at)
    btc = CANDLES[CANDLES["symbol"] == "BTC/USDT"]
    write_candles(tmp_path, "BTC/USDT", "1h", btc)
    after, _ = engine.signals(model, SYMBOLS, at)
    assert after == before
    assert counted == [SYMBOLS, ["BTC/USDT"]]


def test_a_moved_as_of_is_recomputed_and_coming_back_gives_the_first_answer(tmp_path, counted):
    _write(tmp_path, CANDLES)
    engine, model = SignalEngine(tmp_path, SERVING, SignalParams()), _model()
    at, earlier = LAST, LAST - pd.Timedelta(hours=3)
    first, _ = engine.signals(model, SYMBOLS, _iso(at))
    moved, _ = engine.signals(model, SYMBOLS, _iso(earlier))
    back, _ = engine.signals(model, SYMBOLS, _iso(at))
    assert _essentials(moved) == _from_scratch(tmp_path, model, SYMBOLS, earlier)
    assert moved != first and back == first
    assert len(counted) == 3


def test_another_model_never_gets_the_rows_built_for_the_previous_one(tmp_path):
    _write(tmp_path, CANDLES)
    engine = SignalEngine(tmp_path, SERVING, SignalParams())
    short, long_ = _model(sequence_length=8), _model(sequence_length=24, version="2")
    engine.signals(short, SYMBOLS, _iso(LAST))
    engine.signals(long_, SYMBOLS, _iso(LAST))
    assert list(long_.pyfunc.inputs[-1].columns) == list(long_.feature_columns)
    assert _essentials(engine.signals(long_, SYMBOLS, _iso(LAST))[0]) == \
        _from_scratch(tmp_path, long_, SYMBOLS, LAST)


def test_a_new_funding_event_changes_the_served_funding_row(tmp_path):
    perp = "ETH/USDT:USDT"
    fp = FeatureParams(funding_last=True, funding_mean=[3])
    candles = generate_market([perp], "1h", SyntheticParams(bars=BARS), seed=4)
    _write(tmp_path, candles)
    last = candles["timestamp"].max()
    events = pd.date_range(candles["timestamp"].min(), last - pd.Timedelta(hours=8), freq="8h")
    funding = pd.DataFrame({"timestamp": events.astype("datetime64[ms, UTC]"),
                            "funding_rate": np.linspace(1e-4, 3e-4, len(events))})
    write_funding(tmp_path, perp, funding)
    engine, model = SignalEngine(tmp_path, SERVING, SignalParams()), _model(fp, sequence_length=0)
    engine.signals(model, [perp], _iso(last))
    settled = pd.DataFrame({"timestamp": [last + pd.Timedelta(hours=1)], "funding_rate": [-7e-4]})
    write_funding(tmp_path, perp, pd.concat([funding, settled.astype(funding.dtypes.to_dict())]))
    engine.signals(model, [perp], _iso(last))
    assert model.pyfunc.inputs[-2]["funding_last"].iat[0] == pytest.approx(3e-4)
    assert model.pyfunc.inputs[-1]["funding_last"].iat[0] == -7e-4  # settled at the bar's close
