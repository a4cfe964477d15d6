"""One `qt tune` trial's wall time (issue 17), on the 8 real spot symbols of ../shared/data (1h).

A 40-trial study must fit in 30 minutes on 2 cores with ``--workers 2``; this measures what a
trial costs and where its time goes, so the budget can be read before a study is started.

* ``state``: the candles of ../shared/data written to a temporary lake (``data.lake``), the
  feature store materialised from it (``features.materialise``, default params: every bar the
  data has), then ``load_tune_data`` (the pre-holdout cut every trial reads) - once per study.
* ``trials``: ``TRIALS`` trials of the default ``tune.space`` through the study's own objective
  (TPE, seed 42: the first trials are its random start-up draws), each timed, with the time spent
  in the members' fits and in the executor's backtests split out (timers wrapped around the two
  calls the objective makes). Median and spread, and ``study_40_trials_2_workers_minutes``:
  40 x the median / 2 (the two workers run trials side by side, each on one core).
* reference, in the same run: the backtests' share of a trial, so the backtest's speed (the
  ``executor`` section) can be read against what the search pays for the fits.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYMBOLS = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "LTC")]
TRIALS = 3
BUDGET_MINUTES = 30.0


@contextmanager
def _timed(target: str, bucket: list[float]):
    """Wrap the callable at ``target`` so each call's seconds are appended to ``bucket``."""
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - t0)

    with mock.patch(target, wrapper):
        yield


def run() -> dict:
    if not (SHARED / "ohlcv").is_dir():
        return {"skipped": "../shared/data absent"}
    import optuna

    from data.datadir import read_datadir_candles
    from data.lake import write_candles
    from features.materialise import materialise
    from qt.config import load_params
    from qt.paths import StatePaths
    from training.tune import load_tune_data, make_objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(overrides={"data": {"source": f"parquet:{SHARED}", "symbols": SYMBOLS, "timeframe": "1h"}})
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as home:
        paths = StatePaths(Path(home)).ensure()
        t0 = time.perf_counter()
        lake = paths.raw / "bench"
        candles = read_datadir_candles(SHARED, SYMBOLS, "1h")
        for symbol, bars in candles.groupby("symbol", sort=False):
            write_candles(lake, symbol, "1h", bars.drop(columns="symbol").reset_index(drop=True))
        materialise(lake, SYMBOLS, "1h", params, paths.features)
        data = load_tune_data(params, paths, lake)
        state_s = time.perf_counter() - t0
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42),
                                    pruner=optuna.pruners.NopPruner())
        fits: list[float] = []
        backtests: list[float] = []
        rows = []
        with _timed("training.models.fit_any_member", fits), _timed("executor.backtest.run_backtest", backtests):
            for _ in range(TRIALS):
                n_fit, n_bt = len(fits), len(backtests)
                t1 = time.perf_counter()
                study.optimize(make_objective(params, data, params.tune), n_trials=1)
                trial = study.trials[-1]
                rows.append({"seconds": round(time.perf_counter() - t1, 1), "state": trial.state.name,
                             "fit_seconds": round(sum(fits[n_fit:]), 1),
                             "backtest_seconds": round(sum(backtests[n_bt:]), 1),
                             "backtests": len(backtests) - n_bt,
                             "members": trial.params.get("train.members"),
                             "value": None if trial.value is None else round(float(trial.value), 5)})
    seconds = [r["seconds"] for r in rows]
    median = statistics.median(seconds)
    backtest_share = sum(r["backtest_seconds"] for r in rows) / max(sum(seconds), 1e-9)
    return {
        "symbols": len(SYMBOLS), "bars": int(data.candles.groupby("symbol").size().max()),
        "trials_data_end": str(data.end), "folds": params.tune.folds or params.train.folds,
        "state_seconds": round(state_s, 1),
        "trials": rows,
        "trial_seconds_median": median, "trial_seconds_min": min(seconds), "trial_seconds_max": max(seconds),
        "backtest_share_of_trial": round(backtest_share, 3),
        "study_40_trials_2_workers_minutes": round(40 * median / 2 / 60, 1),
        "budget_minutes": BUDGET_MINUTES,
    }
