"""A tiny model obeying the Model contract, shipped to the served process via ``code_paths``.

prob_up = sigmoid(k * logret_4) and expected_return = return_scale * logret_4,
so a test can derive the expected answer by hand from four closes.
Importable as a top-level module (``code_paths`` puts its file on sys.path).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class SigmoidMomentumModel(PythonModel):
    def __init__(self, k: float, return_scale: float = 0.5):
        self.k = float(k)
        self.return_scale = float(return_scale)

    def predict(self, context, model_input, params=None):
        x = np.asarray(model_input["logret_4"], dtype=np.float64)
        return pd.DataFrame({"prob_up": 1.0 / (1.0 + np.exp(-self.k * x)),
                             "expected_return": self.return_scale * x})


class MatrixMomentumModel(SigmoidMomentumModel):
    """The toy model with a ``predict_matrix`` entry like ``training.ensemble.EnsembleModel``'s;
    ``matrix_offset`` != 0 makes that entry disagree with ``predict`` (a broken fast path)."""

    def __init__(self, k: float, feature_columns: list[str], matrix_offset: float = 0.0):
        super().__init__(k)
        self.feature_columns = list(feature_columns)
        self.matrix_offset = float(matrix_offset)

    def predict_matrix(self, values):
        x = np.asarray(values, dtype=np.float64)[:, self.feature_columns.index("logret_4")]
        return np.column_stack([1.0 / (1.0 + np.exp(-self.k * x)) + self.matrix_offset, self.return_scale * x])
