"""The model inputs of training rows, built a batch of rows at a time.

Why: the ensemble's input row is the tabular features followed by the sequence members' windows
(``features.sequence``: 64 bars of the return and of each ``train.sequence_exog`` column, 192
float64 per row by default). Held as columns for every training row, the windows were most of
``qt run``'s memory - 5 GB per copy at 566 symbols x 6000 bars, and the folds copy them again.
Here a split of the training frame keeps its tabular values once and each row's position in the
features frame; ``matrix`` assembles any rows' inputs in the ensemble's column order when a fit
or a prediction needs them, and ``batches`` bounds a prediction's matrix to ``BATCH_ROWS`` rows.
The values are the very floats the window columns held (``ReturnWindows`` builds those columns
too), so fits and predictions are unchanged, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from features.sequence import ReturnWindows
from qt.config import Params
from qt.errors import DataError
from training.deep import PREDICT_BATCH_ROWS
from training.models import SEQUENCE_MEMBERS, fit_any_member, fit_member

FEATURE_ROW = "_feature_row"  # a training row's position in the features frame its windows come from
# rows per prediction batch: a multiple of the sequence members' forward-pass batch, so batching
# here never changes theirs (nor their answers)
BATCH_ROWS = 4 * PREDICT_BATCH_ROWS


class ModelInputs:
    """Inputs of the rows of ``frame`` (a split of the joined training frame) in ``columns`` order:
    ``tabular`` from the frame, the window columns from ``windows`` (None: no sequence member)."""

    def __init__(self, frame: pd.DataFrame, tabular: list[str], columns: list[str], windows: ReturnWindows | None):
        self.columns, self.windows = list(columns), windows
        self.n_tabular = len(tabular)
        expected = list(tabular) + (windows.columns if windows is not None else [])
        if self.columns != expected:
            raise DataError(f"model columns {self.columns[:3]}... are not the tabular features then the windows; "
                            f"re-run training with the current params")
        self.tabular_values = frame[list(tabular)].to_numpy(dtype=np.float64)
        self.feature_rows = frame[FEATURE_ROW].to_numpy() if windows is not None else None
        self._position = {c: i for i, c in enumerate(self.columns)}

    def __len__(self) -> int:
        return len(self.tabular_values)

    def matrix(self, rows: np.ndarray, columns: list[str] | None = None) -> np.ndarray:
        """``[len(rows), len(columns)]`` float64 inputs of ``rows`` (positions in the frame);
        ``columns`` default: every model column, in order."""
        rows = np.asarray(rows, dtype=np.int64)
        picked = list(range(len(self.columns))) if columns is None else [self._position[c] for c in columns]
        if all(i < self.n_tabular for i in picked):
            tab = self.tabular_values[rows]
            return tab if picked == list(range(self.n_tabular)) else tab[:, picked]
        full = np.hstack([self.tabular_values[rows], self.windows.matrix(self.feature_rows[rows])])
        return full if columns is None else full[:, picked]

    def batches(self, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """``rows`` (default: all) in consecutive batches of at most ``BATCH_ROWS``."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        for start in range(0, len(rows), BATCH_ROWS):
            yield rows[start:start + BATCH_ROWS]

    def predict(self, fn, rows: np.ndarray | None = None, columns: list[str] | None = None) -> np.ndarray:
        """``fn(matrix)`` over ``rows`` batch by batch, concatenated (``fn`` maps rows to rows)."""
        parts = [fn(self.matrix(batch, columns)) for batch in self.batches(rows)]
        return np.concatenate(parts) if parts else fn(self.matrix(np.zeros(0, dtype=np.int64), columns))


def fit_on_rows(name: str, series: pd.DataFrame, rows: np.ndarray, up: np.ndarray, params: Params,
                inputs: ModelInputs, columns: list[str]):
    """Member ``name`` fitted on the training rows ``rows``: a tree on their input matrix, a sequence
    net on their ``series`` (keys, returns, exogenous columns) with their windows built on demand."""
    if name in SEQUENCE_MEMBERS:
        return fit_any_member(name, series.iloc[rows], up[rows], params, columns,
                              windows=lambda at: inputs.matrix(rows[at], columns))
    return fit_member(name, inputs.matrix(rows, columns), up[rows], params.train)
