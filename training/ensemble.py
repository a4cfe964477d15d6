"""The ensemble that is logged, registered, served and backtested - one object, one code path.

``EnsembleModel.predict_frame(df)`` is what the backtest (in-process) and the
BentoML service (via ``mlflow.pyfunc``, which calls ``predict`` -> ``predict_frame``)
both run, so live and backtest decide with the same arithmetic.

How it combines its members (both fitted on walk-forward **out-of-fold**
predictions only, never on rows a member was trained on):

* ``prob_up`` = sum_i w_i * p_i with convex weights (w_i >= 0, sum 1) that minimise
  the log loss of the OOF ensemble probability. Convex weights keep the output a
  probability and cannot extrapolate beyond the members (unlike logistic stacking).
* ``expected_return`` = a + b * (prob_up - 0.5), an ordinary least-squares fit of
  the realised ``fwd_return`` (log return over the label horizon) on the OOF
  ensemble ``prob_up``. Linear, two numbers, easy to read on the model card;
  ``a`` absorbs the unconditional drift of the training period.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from scipy.optimize import minimize

from qt.errors import DataError
from training.models import predict_up_probability

_EPS = 1e-12


def fit_convex_weights(member_probs: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Log-loss-optimal convex weights for the columns of ``member_probs`` (n_rows x k).

    Solved with SLSQP from equal weights (deterministic). One member => weight 1.
    """
    probs = np.clip(np.asarray(member_probs, dtype=np.float64), _EPS, 1 - _EPS)
    y = np.asarray(up, dtype=np.float64)
    k = probs.shape[1]
    if k == 1:
        return np.ones(1)

    def _loss(w: np.ndarray) -> float:
        p = np.clip(probs @ w, _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    res = minimize(_loss, np.full(k, 1.0 / k), method="SLSQP", bounds=[(0.0, 1.0)] * k,
                   constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0}])
    w = np.where(res.x < 1e-6, 0.0, res.x)  # solver dust (1e-17) is a zero weight
    return w / w.sum()


def fit_return_map(prob_up: np.ndarray, fwd_return: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of the OLS fit ``fwd_return ~ a + b * (prob_up - 0.5)``."""
    x = np.asarray(prob_up, dtype=np.float64) - 0.5
    y = np.asarray(fwd_return, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(np.mean(y)) if len(y) else 0.0, 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


class EnsembleModel(PythonModel):
    """Weighted members + a linear return map, per the Model contract.

    Input: a DataFrame holding (at least) ``feature_columns``; other columns such as
    ``symbol``/``timestamp`` are ignored. Output: DataFrame ``prob_up``,
    ``expected_return``, one row per input row, same index.
    """

    def __init__(self, feature_columns: list[str], members: dict[str, object], weights: dict[str, float],
                 return_intercept: float, return_slope: float,
                 member_columns: dict[str, list[str]] | None = None, sequence_length: int = 0,
                 sequence_exog: list[str] | None = None):
        self.feature_columns = list(feature_columns)
        self.members = dict(members)
        self.weights = {name: float(weights[name]) for name in self.members}
        self.return_intercept = float(return_intercept)
        self.return_slope = float(return_slope)
        # Which input columns each member reads: the tree members the tabular features, the
        # sequence members the ``seq_ret_*`` return window (``features.sequence``).
        self.member_columns = {name: list((member_columns or {}).get(name, self.feature_columns))
                               for name in self.members}
        self.sequence_length = int(sequence_length)
        # feature columns whose windows (``seq_<column>_k``) ride along with the return window
        self.sequence_exog = list(sequence_exog or [])

    def __setstate__(self, state: dict) -> None:
        """Models pickled before members had their own columns: every member read all columns."""
        self.__dict__.update(state)
        self.__dict__.setdefault("member_columns", {n: list(self.feature_columns) for n in self.members})
        self.__dict__.setdefault("sequence_length", 0)
        self.__dict__.setdefault("sequence_exog", [])

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"model input must be a table of feature columns, got {type(frame).__name__}")
        missing = [c for c in self.feature_columns if c not in frame.columns]
        if missing:
            raise DataError(f"model input lacks feature columns {missing}; the model was trained on "
                            f"{self.feature_columns} - compute features with the model's feature_params")
        try:
            x = frame[self.feature_columns].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("model input has non-numeric feature values; send numbers only") from None
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"model input has {int(bad.any(axis=1).sum())} row(s) with NaN/inf features "
                            f"(first: row {int(row)}, column {self.feature_columns[col]!r}); "
                            f"drop warm-up rows before predicting")
        return x

    def member_probabilities(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each member's P(up) as a column, for per-model metrics."""
        x = self._matrix(frame)
        position = {c: i for i, c in enumerate(self.feature_columns)}
        out = {}
        for name, member in self.members.items():
            cols = [position[c] for c in self.member_columns[name]]
            out[name] = predict_up_probability(member, x[:, cols])
        return pd.DataFrame(out, index=frame.index)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``prob_up`` and ``expected_return`` for every row of ``frame`` (same index)."""
        if len(frame) == 0:
            self._matrix(frame)  # still validate the columns
            return pd.DataFrame({"prob_up": pd.Series(dtype="float64"),
                                 "expected_return": pd.Series(dtype="float64")}, index=frame.index)
        probs = self.member_probabilities(frame)
        w = np.array([self.weights[name] for name in probs.columns])
        prob_up = np.clip(probs.to_numpy() @ w, 0.0, 1.0)
        expected = self.return_intercept + self.return_slope * (prob_up - 0.5)
        return pd.DataFrame({"prob_up": prob_up, "expected_return": expected}, index=frame.index)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: D401
        """MLflow pyfunc entry point: exactly ``predict_frame``."""
        return self.predict_frame(model_input).reset_index(drop=True)

    def describe(self) -> dict:
        """The numbers a model card shows."""
        return {"members": list(self.members), "weights": self.weights,
                "return_intercept": self.return_intercept, "return_slope": self.return_slope,
                "feature_columns": self.feature_columns, "sequence_length": self.sequence_length,
                "sequence_exog": self.sequence_exog}
