"""A model stand-in that records what it is fed. The serving and backtest tests assert on the exact
feature rows a model receives (point in time, column order, windows), not on its answers, so one
recorder serves them all."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from features.compute import feature_columns
from features.sequence import window_columns
from qt.config import FeatureParams
from serving.champion import LoadedModel


class InputRecorder:
    """A pyfunc: keeps a copy of every frame it predicts on and answers a constant ``prob_up``.
    With ``feature_params`` it also carries the logged metadata ``training.model_predictions``
    reads from a pyfunc (feature params, columns, timeframe)."""

    def __init__(self, prob_up: float = 0.5, feature_params: FeatureParams | None = None) -> None:
        self.prob_up = prob_up
        self.inputs: list[pd.DataFrame] = []
        if feature_params is not None:
            self.metadata = SimpleNamespace(metadata={"feature_params": feature_params.model_dump(mode="json"),
                                                      "feature_columns": feature_columns(feature_params),
                                                      "timeframe": "1h"})

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.inputs.append(frame.copy())
        return pd.DataFrame({"prob_up": np.full(len(frame), self.prob_up), "expected_return": np.zeros(len(frame))})


def recording_model(fp: FeatureParams, sequence_length: int = 0, sequence_exog: tuple[str, ...] = ()) -> LoadedModel:
    """A served champion over ``fp`` (1h) whose pyfunc is an ``InputRecorder`` (``model.pyfunc.inputs``)."""
    cols = feature_columns(fp) + window_columns(sequence_length)
    cols += [c for source in sequence_exog for c in window_columns(sequence_length, source)]
    return LoadedModel(name="m", version="1", alias="champion", pyfunc=InputRecorder(), metadata={}, feature_params=fp,
                       feature_columns=tuple(cols), timeframe="1h", sequence_length=sequence_length,
                       sequence_exog=tuple(sequence_exog))
