"""New-bar signals (issue 18): the first ``/signals`` batch for 566 symbols after a new bar.

After a new bar every symbol's model input row is new, so the engine's row cache misses for the
whole universe. Measured in process on ``serving.engine.SignalEngine`` (what the service runs
per request), two engines side by side in the same run, on the same lake and model:

* ``panel``: the engine as served - the missing rows computed all symbols at once
  (``serving.newbar`` / ``features.panel``);
* ``full``: the reference - the same engine forced through ``latest_feature_rows``
  (``compute_features`` over 566 x ``serving.history_bars`` candles + ``add_return_windows``),
  the path every new bar took before.

Two workloads, each timed per new bar for both engines (their order alternates bar by bar):

* ``appended``: a bar is appended to the lake (one ``data.lake.write_candles`` per symbol,
  untimed), then the first batch at that bar - ``refreshed``: after ``SignalEngine.refresh_candles``
  (untimed) re-read the changed candle files, as the service's background refresher does while
  the collector writes (``serving.refresher``, every ``serving.lake_refresh_seconds``), so the
  batch computes every row - what the live service answers (the target); ``cold``: straight after
  the writes, the batch re-reads the 566 changed files itself (a refresher switched off, or a
  request racing the collector);
* ``as_of``: the lake already loaded, the batch asks for successive bars by ``as_of`` - what the
  paper replay of ``qt run`` does (one request per bar over a finished lake): compute only.

``ratio_panel_to_full`` compares the two engines of the same run (the 2 cores are shared: absolute
times are noisy, ratios much less so). Every answer of ``panel`` must equal ``full``'s exactly
(``answers_equal``).

The model: the default feature set, ``train.sequence_length`` 64 with the default
``train.sequence_exog`` windows (the input rows of the default ensemble), and two small tree
members (XGBoost + LightGBM, ``TREES`` trees each) trained on 8 symbols, averaged: the predict cost
of a batch of 566 rows is small beside the features either way (see ``bench.serving``).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_SYMBOLS = 566
NEW_BARS = 10  # appended one by one, each measured
AS_OF_BARS = 30  # successive bars of the as_of workload
BARS = 520 + NEW_BARS  # history_bars (400) + room for the as_of walk
TRAIN_SYMBOLS = 8
TREES = 30
SEED = 29
TARGET_P99_MS = 250.0


def universe() -> list[str]:
    return [f"S{i:03d}/USDT" for i in range(N_SYMBOLS)]


class TreePair:
    """XGBoost + LightGBM classifiers on the model's input columns, probabilities averaged
    (``predict_matrix`` like ``training.ensemble.EnsembleModel``'s)."""

    def __init__(self, features: pd.DataFrame, columns: list[str], up: np.ndarray):
        import lightgbm as lgb
        import xgboost as xgb

        x = features[columns].to_numpy(dtype=np.float64)
        self.members = [xgb.XGBClassifier(n_estimators=TREES, max_depth=4, n_jobs=1, verbosity=0).fit(x, up),
                        lgb.LGBMClassifier(n_estimators=TREES, num_leaves=15, n_jobs=1, verbose=-1).fit(x, up)]
        self.columns = columns

    def predict_matrix(self, values: np.ndarray) -> np.ndarray:
        prob = np.mean([m.predict_proba(values)[:, 1] for m in self.members], axis=0)
        return np.column_stack([prob, (prob - 0.5) * 0.01])

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.predict_matrix(frame[self.columns].to_numpy(dtype=np.float64))
        return pd.DataFrame({"prob_up": out[:, 0], "expected_return": out[:, 1]})


def champion_like(candles: pd.DataFrame, train_symbols: list[str]):
    """A ``LoadedModel`` with the default feature set and return/exogenous windows."""
    from features.compute import compute_features, feature_columns
    from features.sequence import add_return_windows, all_window_columns
    from qt.config import FeatureParams, TrainParams
    from serving.champion import LoadedModel

    fp, train = FeatureParams(), TrainParams()
    length, exog = int(train.sequence_length), tuple(train.sequence_exog)
    columns = feature_columns(fp) + all_window_columns(length, exog)
    part = candles[candles["symbol"].isin(train_symbols)]
    feats = add_return_windows(compute_features(part, fp), length, exog=exog).dropna()
    nxt = feats.groupby("symbol")["logret_1"].shift(-1)
    feats = feats[nxt.notna()]
    pair = TreePair(feats, columns, (nxt[nxt.notna()] > 0).to_numpy().astype(int))
    return LoadedModel(name="bench-newbar", version="1", alias="champion", pyfunc=pair, metadata={},
                       feature_params=fp, feature_columns=tuple(columns), timeframe="1h", sequence_length=length,
                       sequence_exog=exog, matrix=pair.predict_matrix)


def _full_engine_class():
    from serving.engine import SignalEngine

    class FullRecompute(SignalEngine):
        """The reference: every missing row through ``latest_feature_rows`` (the pre-panel path)."""

        def compute_rows(self, model, spans, inputs):
            return super().compute_rows(model, spans, True)

    return FullRecompute


def _summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"bars": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


def _timed(engine, model, symbols: list[str], as_of: str) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    signals, _ = engine.signals(model, symbols, as_of)
    return time.perf_counter() - t0, signals


def _both(engines: dict, names: tuple[str, str], model, symbols: list[str], as_of: str, turn: int,
          times: dict) -> list[list[dict]]:
    """Time the two engines' batch at ``as_of`` (order alternating with ``turn``); their answers."""
    answers = {}
    for name in (names if turn % 2 == 0 else names[::-1]):
        gc.collect()
        seconds, answers[name] = _timed(engines[name], model, symbols, as_of)
        times[name].append(seconds)
    return [answers[n] for n in names]


def run() -> dict:
    from data.lake import write_candles
    from data.synthetic import generate_market
    from qt.config import ServingParams, SignalParams, SyntheticParams
    from serving.engine import SignalEngine

    started = time.perf_counter()
    load_before = os.getloadavg()
    symbols = universe()
    candles = generate_market(symbols, "1h", SyntheticParams(bars=BARS, signal_strength=0.2), SEED)
    by_symbol = {str(sym): part for sym, part in candles.groupby("symbol", sort=False)}
    bars = pd.DatetimeIndex(sorted(candles["timestamp"].unique()))
    model = champion_like(candles, symbols[:TRAIN_SYMBOLS])
    serving, signal = ServingParams(), SignalParams()
    iso = [b.strftime("%Y-%m-%dT%H:%M:%SZ") for b in bars]
    with tempfile.TemporaryDirectory(prefix="qt-bench-newbar-") as tmp:
        lake = Path(tmp)
        t0 = time.perf_counter()
        first_new = len(bars) - NEW_BARS
        for sym, part in by_symbol.items():
            write_candles(lake, sym, "1h", part.iloc[:first_new])
        write_s = time.perf_counter() - t0
        full = _full_engine_class()
        engines = {"panel": SignalEngine(lake, serving, signal), "full": full(lake, serving, signal),
                   "panel_refreshed": SignalEngine(lake, serving, signal),
                   "full_refreshed": full(lake, serving, signal)}
        for engine in engines.values():  # read the lake once, at a bar not measured
            engine.signals(model, symbols, iso[first_new - 1 - AS_OF_BARS])

        as_of_times: dict[str, list[float]] = {"panel": [], "full": []}
        equal = True
        for turn, i in enumerate(range(first_new - AS_OF_BARS, first_new)):
            a, b = _both(engines, ("panel", "full"), model, symbols, iso[i], turn, as_of_times)
            equal &= a == b

        appended_times: dict[str, list[float]] = {name: [] for name in engines}
        cached: list[float] = []
        append_s, refresh_s = [], []
        for turn, i in enumerate(range(first_new, len(bars))):
            t0 = time.perf_counter()
            for sym, part in by_symbol.items():
                write_candles(lake, sym, "1h", part.iloc[i:i + 1])
            append_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()  # what the service's refresher does while the collector writes
            for name in ("panel_refreshed", "full_refreshed"):
                if engines[name].refresh_candles() != N_SYMBOLS:
                    raise RuntimeError(f"{name}: the refresh did not re-read every appended symbol")
            refresh_s.append((time.perf_counter() - t0) / 2)
            answers = _both(engines, ("panel", "full"), model, symbols, iso[i], turn, appended_times)
            answers += _both(engines, ("panel_refreshed", "full_refreshed"), model, symbols, iso[i], turn,
                             appended_times)
            equal &= all(a == answers[0] for a in answers)
            cached.append(_timed(engines["panel"], model, symbols, iso[i])[0])

    def ratio(panel: list[float], reference: list[float]) -> dict:
        a, b = _summary(panel), _summary(reference)
        return {"p50": round(a["p50_ms"] / b["p50_ms"], 3), "p99": round(a["p99_ms"] / b["p99_ms"], 3)}

    appended = {
        "cold": {"panel": _summary(appended_times["panel"]), "full": _summary(appended_times["full"])},
        "refreshed": {"panel": _summary(appended_times["panel_refreshed"]),
                      "full": _summary(appended_times["full_refreshed"])},
    }
    served = appended["refreshed"]["panel"]
    served.update(target_p99_ms=TARGET_P99_MS, within_target=bool(served["p99_ms"] < TARGET_P99_MS))
    return {
        "lake": {"symbols": N_SYMBOLS, "timeframe": "1h", "bars_per_symbol": BARS,
                 "source": f"synthetic (data.synthetic.generate_market, seed {SEED})",
                 "write_seconds": round(write_s, 1),
                 "append_one_bar_seconds_p50": round(float(np.median(append_s)), 1),
                 "refresh_after_append_seconds_p50": round(float(np.median(refresh_s)), 2)},
        "model": {"input_columns": len(model.feature_columns), "sequence_length": model.sequence_length,
                  "sequence_exog": list(model.sequence_exog), "history_bars": serving.history_bars,
                  "members": f"xgboost + lightgbm, {TREES} trees each, trained on {TRAIN_SYMBOLS} symbols"},
        "appended": appended,
        "as_of": {name: _summary(t) for name, t in as_of_times.items()},
        "cached_batch_after_append": _summary(cached),
        "ratio_panel_to_full": {
            "appended_cold": ratio(appended_times["panel"], appended_times["full"]),
            "appended_refreshed": ratio(appended_times["panel_refreshed"], appended_times["full_refreshed"]),
            "as_of": ratio(as_of_times["panel"], as_of_times["full"])},
        "answers_equal": bool(equal),
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "bench_seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":  # python -m bench.newbar
    import json

    print(json.dumps(run(), indent=2))
