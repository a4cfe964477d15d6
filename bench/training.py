"""Full retrain wall time of the four-model ensemble (issue #5), on the real 1h set of ../shared/data.

* ``full``: ``compute_features`` + ``make_labels`` for the 8 spot symbols, then
  ``training.train.train_models`` with the configured members (XGBoost, LightGBM, N-HiTS,
  PatchTST): walk-forward folds + final fit + holdout prediction - the work the train stage
  does on every retrain. Target: under 15 minutes on 2 cores.
* reference, measured in the same run: the same ``train_models`` with the two tree members
  only, so the ratio says what the sequence members cost on this machine today.
* per member: seconds spent fitting and predicting (all folds + final fit) and holdout AUC.
"""

from __future__ import annotations

import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYMBOLS = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "LTC")]
TREES = ["xgboost", "lightgbm"]


def _train(features, labels, params) -> dict:
    from training.train import train_models

    t0 = time.perf_counter()
    result = train_models(features, labels, params)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 1),
        "rows": result.rows,
        "members": {m["name"]: {"fit_predict_seconds": m.get("fit_seconds"),
                                "holdout_auc": round(float(m["oos"]["auc"]), 4)}
                    for m in result.models},
        "weights": {k: round(v, 4) for k, v in result.ensemble.weights.items()},
    }


def run() -> dict:
    from features.compute import compute_features
    from features.labels import make_labels
    from qt.config import Params
    from data.lake import read_datadir_candles

    if not (SHARED / "ohlcv").is_dir():
        return {"skipped": "../shared/data absent"}
    params = Params(data={"symbols": SYMBOLS, "timeframe": "1h"})
    t0 = time.perf_counter()
    candles = read_datadir_candles(SHARED, SYMBOLS, "1h")
    features = compute_features(candles, params.features)
    labels = make_labels(candles, params.labels, params.costs, params.risk)
    prepare = time.perf_counter() - t0
    full = _train(features, labels, params)
    trees = _train(features, labels, params.model_copy(
        update={"train": params.train.model_copy(update={"members": TREES})}))
    total = prepare + full["seconds"]
    return {
        "symbols": len(SYMBOLS),
        "candles": int(len(candles)),
        "members": list(params.train.members),
        "features_labels_seconds": round(prepare, 1),
        "full_retrain": full,
        "full_retrain_total_seconds": round(total, 1),
        "target_seconds": 900,
        "within_target": bool(total < 900),
        "reference_trees_only": trees,
        "ratio_full_to_trees_only": round(full["seconds"] / trees["seconds"], 2) if trees["seconds"] else None,
    }


if __name__ == "__main__":  # python -m bench.training
    import json

    print(json.dumps(run(), indent=2))
