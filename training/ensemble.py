"""The ensemble that is logged, registered, served and backtested - one object, one code path.

``EnsembleModel.predict_frame(df)`` is what the backtest (in-process) and MLflow's pyfunc
(``predict`` -> ``predict_frame``) run; the BentoML service calls ``predict_matrix`` on the rows it
built itself, the same arithmetic without the frames (``predict_frame`` is ``predict_matrix`` of
the frame's values), so live and backtest decide with the same bits.

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

from collections.abc import Callable

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

    def __getstate__(self) -> dict:
        """Pickle without the per-process cache of ``_member_inputs`` / ``_member_predictor``: it
        holds library boosters' bound methods and is rebuilt on the first prediction after loading."""
        state = dict(self.__dict__)
        state.pop("_fast", None)
        return state

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"model input must be a table of feature columns, got {type(frame).__name__}")
        exact = len(frame.columns) == len(self.feature_columns) and frame.columns.tolist() == self.feature_columns
        if not exact:  # select (and order) the feature columns; a frame already in order skips the copy
            missing = [c for c in self.feature_columns if c not in frame.columns]
            if missing:
                raise DataError(f"model input lacks feature columns {missing}; the model was trained on "
                                f"{self.feature_columns} - compute features with the model's feature_params")
        try:
            x = (frame if exact else frame[self.feature_columns]).to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("model input has non-numeric feature values; send numbers only") from None
        return self._checked_matrix(x)

    def _checked_matrix(self, x: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"model input has {int(bad.any(axis=1).sum())} row(s) with NaN/inf features "
                            f"(first: row {int(row)}, column {self.feature_columns[col]!r}); "
                            f"drop warm-up rows before predicting")
        return x

    def _member_matrix(self, x: np.ndarray) -> np.ndarray:
        """``[n, members]`` P(up), column-major: the layout ``member_probabilities(...).to_numpy()``
        has, so the weighted sum below runs the very same BLAS call (bit-identical answers)."""
        out = np.empty((len(x), len(self.members)), dtype=np.float64, order="F")
        for j, (name, cols) in enumerate(self._member_inputs()):
            out[:, j] = self._member_predictor(name)(x[:, cols])
        return out

    def _member_inputs(self) -> list[tuple[str, list[int]]]:
        """(member, positions of its columns in ``feature_columns``), computed once per process
        (the members and their columns are fixed once the ensemble is built)."""
        fast = self.__dict__.setdefault("_fast", {"inputs": None, "predictors": {}})
        if fast["inputs"] is None:
            position = {c: i for i, c in enumerate(self.feature_columns)}
            fast["inputs"] = [(name, [position[c] for c in self.member_columns[name]]) for name in self.members]
        return fast["inputs"]

    def _member_predictor(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        predictors = self.__dict__.setdefault("_fast", {"inputs": None, "predictors": {}})["predictors"]
        if name not in predictors:  # two threads may both build it: the same function either way
            predictors[name] = member_predictor(self.members[name])
        return predictors[name]

    def member_probabilities(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each member's P(up) as a column, for per-model metrics."""
        probs = self._member_matrix(self._matrix(frame))
        return pd.DataFrame({name: probs[:, j] for j, name in enumerate(self.members)}, index=frame.index)

    def member_probability_matrix(self, x: np.ndarray) -> np.ndarray:
        """``member_probabilities`` of a matrix in ``feature_columns`` order: ``[n, members]``."""
        return self._member_matrix(self._checked_matrix(np.asarray(x, dtype=np.float64)))

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """``[n, 2]``: ``prob_up`` and ``expected_return`` per row of ``x``, the feature values in
        ``feature_columns`` order (float64). The arithmetic of ``predict_frame`` without the frames:
        the service's entry for rows it built itself (``serving.champion.LoadedModel.predict_values``)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_columns):
            raise DataError(f"model input must be [rows, {len(self.feature_columns)}] feature values in the "
                            f"model's column order, got shape {x.shape}")
        self._checked_matrix(x)
        out = np.empty((len(x), 2), dtype=np.float64)
        if len(x):
            w = np.array([self.weights[name] for name in self.members])
            prob_up = np.clip(self._member_matrix(x) @ w, 0.0, 1.0)
            out[:, 0] = prob_up
            out[:, 1] = self.return_intercept + self.return_slope * (prob_up - 0.5)
        return out

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``prob_up`` and ``expected_return`` for every row of ``frame`` (same index)."""
        out = self.predict_matrix(self._matrix(frame))
        return pd.DataFrame({"prob_up": out[:, 0], "expected_return": out[:, 1]}, index=frame.index)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: D401
        """MLflow pyfunc entry point: exactly ``predict_frame``."""
        return self.predict_frame(model_input).reset_index(drop=True)

    def describe(self) -> dict:
        """The numbers a model card shows."""
        return {"members": list(self.members), "weights": self.weights,
                "return_intercept": self.return_intercept, "return_slope": self.return_slope,
                "feature_columns": self.feature_columns, "sequence_length": self.sequence_length,
                "sequence_exog": self.sequence_exog}


def member_predictor(member) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> P(up)`` for one fitted member: exactly ``training.models.predict_up_probability``
    (same library call, same arguments, same float64 result), minus the scikit-learn wrapper's
    per-call work that a served row pays for nothing (measured on one row: LightGBM's wrapper
    re-derives and deep-copies its parameters, 0.37 -> 0.06 ms; XGBoost's sets a global config
    context, 0.24 -> 0.18 ms). Any other member type keeps ``predict_proba``.

    * XGBoost ``binary:logistic``: ``predict_proba`` is ``inplace_predict`` (value) on the same
      iteration range stacked as (1 - p, p); P(up) is that p.
    * LightGBM binary: ``predict_proba`` is ``Booster.predict`` with the estimator's prediction
      parameters (computed here once; the thread count is read on every call, as
      ``serving.champion.use_one_thread`` may lower it after loading) stacked as (1 - p, p).
    """
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    if type(member) is XGBClassifier and member.objective == "binary:logistic" \
            and getattr(member, "n_classes_", 2) == 2 and member.booster in (None, "gbtree", "dart"):
        booster, iterations = member.get_booster(), member._get_iteration_range(None)

        def xgboost_up(x: np.ndarray) -> np.ndarray:
            p = booster.inplace_predict(x, iteration_range=iterations, predict_type="value", missing=member.missing,
                                        validate_features=False)
            return np.asarray(p, dtype=np.float64)
        return xgboost_up
    if type(member) is LGBMClassifier and member.objective_ == "binary" and member.n_classes_ == 2 \
            and member.n_features_ > 0:
        from lightgbm.basic import _ConfigAliases

        params = member._process_params(stage="predict")
        for alias in _ConfigAliases.get_by_alias("data", "X", "raw_score", "start_iteration", "num_iteration",
                                                 "pred_leaf", "pred_contrib", "num_threads"):
            params.pop(alias, None)
        booster = member.booster_

        def lightgbm_up(x: np.ndarray) -> np.ndarray:
            return np.asarray(booster.predict(x, raw_score=False, start_iteration=0, num_iteration=None,
                                              pred_leaf=False, pred_contrib=False, validate_features=False,
                                              num_threads=member._process_n_jobs(member.n_jobs), **params),
                              dtype=np.float64)
        return lightgbm_up
    return lambda x: predict_up_probability(member, x)
