"""Out-of-sample classification metrics a person reads to judge a model (pure).

* ``auc`` - ranking quality of ``prob_up`` (0.5 = coin flip); NaN when only one class.
* ``log_loss`` - calibration + sharpness; a constant 0.5 scores ln 2 = 0.693.
* ``accuracy`` - share of rows where ``prob_up >= 0.5`` agrees with ``up``.
* ``ic`` - Spearman rank correlation of ``expected_return`` with the realised
  ``fwd_return`` (the information coefficient); NaN when either side is constant.
* ``rows`` - how many rows the numbers rest on.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import log_loss, roc_auc_score

_EPS = 1e-12


def compute_classification_metrics(up, prob_up, fwd_return=None, expected_return=None) -> dict[str, float]:
    """Metrics of ``prob_up`` against labels ``up`` (and IC if returns are given)."""
    y = np.asarray(up, dtype=np.int64)
    p = np.clip(np.asarray(prob_up, dtype=np.float64), _EPS, 1.0 - _EPS)
    out: dict[str, float] = {"rows": int(len(y))}
    if len(y) == 0:
        return {"auc": float("nan"), "log_loss": float("nan"), "accuracy": float("nan"),
                "ic": float("nan"), "rows": 0}
    out["auc"] = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    out["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
    out["accuracy"] = float(np.mean((p >= 0.5).astype(np.int64) == y))
    out["ic"] = compute_information_coefficient(expected_return, fwd_return)
    return out


def compute_information_coefficient(expected_return, fwd_return) -> float:
    """Spearman IC; NaN when either input is missing or constant."""
    if expected_return is None or fwd_return is None:
        return float("nan")
    a = np.asarray(expected_return, dtype=np.float64)
    b = np.asarray(fwd_return, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
