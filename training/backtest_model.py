"""Backtest any logged model on any candles: ``qt backtest`` and the champion re-evaluation.

``model_predictions`` is the ONE way a logged model's input is rebuilt from candles outside
training: ``compute_features`` with the feature params the model logged, then (for models with
sequence members) ``features.sequence.add_return_windows`` with its logged ``sequence_length``,
then the rows of ``[start, end]``, then ``model.predict`` on the logged ``feature_columns``.
The promote stage's champion re-evaluation and ``qt backtest`` both call it, so a champion is
judged on exactly the input it would see when served.

Every signals frame traded here carries ``atr`` (``features.atr``): the feature
``atr_{risk.atr_period}`` of each signal's bar, computed from the same candles by the same
feature code as the served signals' ``atr``, so ATR-scaled stops and take-profits trade alike in
the backtest and live (a frame without it would open nothing under ATR levels). The RSI/MACD
rule's signals carry it too, so the baseline meets the same risk rules.

``backtest_model`` returns the same block the evaluate stage writes (``evaluation.json`` and
summary.json's ``evaluation``): ``strategy``, ``rule_rsi_macd``, (with ``risk.allow_short``)
``rule_rsi_macd_short``, ``buy_and_hold``, ``flat`` (``evaluation_keys``), each the backtest
metrics plus ``start``/``end``, through the same ``executor.backtest``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.sequence import ReturnWindows
from qt.config import FeatureParams, Params
from qt.errors import DataError, UserError
from training.baselines import RULE_FEATURES, RULE_SHORT
from training.inputs import BATCH_ROWS

EVALUATION_KEYS = ("strategy", "rule_rsi_macd", "buy_and_hold", "flat")  # without risk.allow_short
URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model"


def evaluation_keys(params: Params) -> tuple[str, ...]:
    """The runs of the evaluation block under ``params``: the short rule only with ``risk.allow_short``."""
    if not params.risk.allow_short:
        return EVALUATION_KEYS
    return (*EVALUATION_KEYS[:2], RULE_SHORT, *EVALUATION_KEYS[2:])


def logged_metadata(model) -> dict:
    """The model's logged metadata; DataError when it was not logged by ``qt train``."""
    md = dict(getattr(getattr(model, "metadata", None), "metadata", None) or {})
    missing = [k for k in ("feature_params", "feature_columns", "timeframe") if k not in md]
    if missing:
        raise DataError(f"the model's metadata lacks {missing}: it was not logged by `qt train`, "
                        f"so its input cannot be rebuilt")
    return md


def sequence_length_of(metadata: dict) -> int:
    """Bars of return window the model reads (0 for models logged before sequence members)."""
    return int(metadata.get("sequence_length") or 0)


def history_bars_needed(metadata: dict) -> int:
    """Bars of candles before the first predicted bar: the feature warm-up plus the return window."""
    from features.compute import warmup_bars

    return warmup_bars(FeatureParams(**metadata["feature_params"])) + sequence_length_of(metadata)


def history_bars_for_backtest(metadata: dict, atr_period: int | None = None) -> int:
    """History ``backtest_model`` needs: the model's input, the RSI/MACD rule's warm-up and
    (``atr_period``) the signals' ATR."""
    from features.atr import atr_warmup_bars
    from features.compute import warmup_bars

    atr = 0 if atr_period is None else atr_warmup_bars(FeatureParams(**metadata["feature_params"]), atr_period)
    return max(history_bars_needed(metadata), warmup_bars(RULE_FEATURES), atr)


def model_predictions(model, history_candles: pd.DataFrame, start=None, end=None,
                      funding: pd.DataFrame | None = None, atr_period: int | None = None,
                      reference: pd.DataFrame | None = None, other_venue=None, alt=None) -> pd.DataFrame:
    """Predictions ``symbol, timestamp, prob_up, expected_return`` for the bars in ``[start, end]``
    (with ``atr_period`` also ``atr``: ``atr_{atr_period}`` of each bar, ``features.atr``).
    ``reference`` / ``other_venue``: the multi-input families' inputs when the model logged them
    (``features.materialise.read_feature_inputs`` / ``read_other_venue``), ``alt`` the alt families'
    series (``read_alt_inputs``), as serving passes them.

    ``history_candles`` must reach back ``history_bars_needed`` bars before ``start``: earlier
    rows are the warm-up. A row without a full return window is not predictable (like a warm-up
    row) and is left out; DataError when no row of the window is left.
    """
    from features.atr import ATR, features_with_atr
    from features.compute import compute_features

    md = logged_metadata(model)
    fp = FeatureParams(**md["feature_params"])
    inputs = {"funding": funding, "reference": reference, "other_venue": other_venue, "alt": alt}
    feats = (compute_features(history_candles, fp, **inputs) if atr_period is None else
             features_with_atr(history_candles, fp, atr_period, **inputs))
    ts = feats["timestamp"]
    mask = np.ones(len(feats), dtype=bool)
    if start is not None:
        mask &= (ts >= _utc(start)).to_numpy()
    if end is not None:
        mask &= (ts <= _utc(end)).to_numpy()
    columns = list(md["feature_columns"])
    seq = sequence_length_of(md)
    # the return windows are built for the rows predicted, a batch at a time (training.inputs):
    # as columns of every history row they were gigabytes at hundreds of symbols
    windows = ReturnWindows(feats, seq, exog=md.get("sequence_exog") or []) if seq > 0 else None
    tabular = [c for c in columns if windows is None or c not in windows.columns]
    absent = [c for c in tabular if c not in feats.columns]
    if absent or (windows is not None and columns != tabular + windows.columns):
        raise DataError(f"the rebuilt features lack the model's columns {(absent or columns)[:5]}; the model was "
                        f"logged by a different feature code version - retrain it")
    mask &= feats[tabular].notna().all(axis=1).to_numpy()  # a row with an undefined input is not predictable
    if windows is not None:
        mask &= windows.complete()
    rows = np.flatnonzero(mask)
    if not len(rows):
        raise DataError(f"no predictable bars in [{start or 'start'}, {end or 'end'}]: the model needs "
                        f"{history_bars_needed(md)} bars of history before the first one; widen the range")
    values = feats[tabular].to_numpy(dtype=np.float64)
    parts = []
    for at in range(0, len(rows), BATCH_ROWS):
        batch = rows[at:at + BATCH_ROWS]
        x = values[batch] if windows is None else np.hstack([values[batch], windows.matrix(batch)])
        parts.append(model.predict(pd.DataFrame(x, columns=columns, copy=False)))
    pred = pd.concat(parts, ignore_index=True)
    keys = ["symbol", "timestamp", *([ATR] if atr_period is not None else [])]
    out = feats[keys].iloc[rows].reset_index(drop=True)
    out = out.assign(prob_up=pred["prob_up"].to_numpy(), expected_return=pred["expected_return"].to_numpy())
    return out[["symbol", "timestamp", "prob_up", "expected_return", *keys[2:]]]


def strategy_signals(predictions: pd.DataFrame, history_candles: pd.DataFrame, params: Params,
                     model_version: str) -> pd.DataFrame:
    """The signals frame a model's predictions trade: ``signals_from_predictions`` plus ``atr``
    (the predictions' own, or ``atr_{risk.atr_period}`` computed from ``history_candles``)."""
    from executor.signals import signals_from_predictions
    from features.atr import ATR, attach_atr, row_keys

    signals = signals_from_predictions(predictions, params.signal, model_version=model_version)
    if ATR not in predictions.columns:
        return attach_atr(signals, history_candles, params.risk.atr_period, params.features.warmup_memories)
    atr = pd.Series(predictions[ATR].to_numpy(dtype="float64"), index=row_keys(predictions))
    return signals.assign(**{ATR: atr.reindex(row_keys(signals)).to_numpy()})


def evaluate_predictions(history_candles: pd.DataFrame, predictions: pd.DataFrame, params: Params,
                         model_version: str, funding: pd.DataFrame | None = None) -> tuple[dict[str, dict], dict]:
    """The evaluate stage's comparison on the predictions' window -> (evaluation block, results).

    The strategy trades the predictions; the RSI/MACD rule runs on the same bars (its indicators
    warmed up on the history before), long-only, and with ``risk.allow_short`` also as
    ``rule_rsi_macd_short``; buy-and-hold and flat cover the strategy's window. Keys in
    ``evaluation_keys(params)`` order.
    Perpetuals settle ``funding`` (required for them) in every one of them.
    """
    from executor.backtest import buy_and_hold, flat_baseline, run_backtest
    from features.atr import attach_atr
    from training.baselines import RULE_VERSION, baseline_names, make_rule_signals, rule_params

    start, end = predictions["timestamp"].min(), predictions["timestamp"].max()
    candles = history_candles[history_candles["timestamp"] >= start].reset_index(drop=True)
    signals = strategy_signals(predictions, history_candles, params, model_version)
    results = {"strategy": run_backtest(candles, signals, params, funding=funding)}
    strat = results["strategy"]
    rule = make_rule_signals(history_candles)
    rule = rule[(rule["timestamp"] >= start) & (rule["timestamp"] <= end)]
    rule = attach_atr(rule, history_candles, params.risk.atr_period, params.features.warmup_memories)
    for name in (RULE_VERSION, RULE_SHORT):  # long-only, and (listed with allow_short) shorting on sell
        if name in baseline_names(params):
            results[name] = run_backtest(candles, rule, rule_params(params, name), funding=funding)
    results["buy_and_hold"] = buy_and_hold(candles, params, strat.start, strat.end, funding=funding)
    results["flat"] = flat_baseline(candles, params, strat.start, strat.end)
    evaluation = {}
    for name, res in results.items():
        evaluation[name] = {k: _number(v) for k, v in res.metrics.items()}
        evaluation[name]["start"] = str(res.start)
        evaluation[name]["end"] = str(res.end)
    return evaluation, results


def load_logged_model(model_uri: str, tracking_uri: str | None = None):
    """The pyfunc at ``model_uri``; UserError for a malformed URI, DataError when it cannot be loaded."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith(("models:/", "runs:/")) or model_uri.rstrip("/") in ("models:", "runs:"):
        raise UserError(f"--model {model_uri!r} is not a model URI; use {URI_FORMS}")
    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot load model {model_uri!r}: {first[:200]} (forms: {URI_FORMS})") from None


def backtest_model(model_uri: str, candles: pd.DataFrame, funding: pd.DataFrame | None, params: Params, *,
                   start=None, end=None, tracking_uri: str | None = None, model=None, other_venue=None,
                   alt=None) -> dict:
    """Evaluation block (``EVALUATION_KEYS``) of the model at ``model_uri`` on ``candles``.

    ``candles`` carry the history (``history_bars_needed`` bars before ``start``); the bars
    traded are ``[start, end]`` (default: every predictable bar). ``params`` supplies costs,
    risk and signal thresholds, and its ``data.timeframe`` must be the model's. ``model``:
    an already loaded pyfunc for ``model_uri`` (skips loading). ``other_venue``: Bybit's series
    for a model using the cross-venue features (``features.materialise.read_other_venue``); ``alt``
    the alt series for a model using the alt families (``features.materialise.read_alt_inputs``).
    """
    model = model if model is not None else load_logged_model(model_uri, tracking_uri)
    md = logged_metadata(model)
    if md["timeframe"] != params.data.timeframe:
        raise UserError(f"{model_uri} was trained on {md['timeframe']} bars, not {params.data.timeframe}; "
                        f"backtest it with --timeframe {md['timeframe']}")
    predictions = model_predictions(model, candles, start, end, funding=funding, atr_period=params.risk.atr_period,
                                    other_venue=other_venue, alt=alt)
    evaluation, _ = evaluate_predictions(candles, predictions, params, model_version=model_uri, funding=funding)
    return evaluation


def _utc(value) -> pd.Timestamp:
    """A bound as a UTC timestamp (a naive date is UTC, like every timestamp in the lake)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _number(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None
