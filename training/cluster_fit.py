"""Training on the Dask cluster of ``runner:`` (``runner.task_runner: dask``): the same fits, spread out.

Why: at hundreds of symbols training is most of ``qt run``'s time, and it is made of independent
fits - every member on every walk-forward fold - plus one final fit per member on all pre-holdout
rows. With a cluster:

* **folds as tasks**: each (fold, member) fit and its out-of-fold prediction is one Dask task
  running ``training.inputs.fit_on_rows`` - the function the local loop calls - on the training
  inputs scattered to the workers once (``ClusterTraining``). Same code, same rows, same seeds and thread counts: the
  out-of-fold predictions equal the local ones (``tests/training/test_cluster_fit.py``).
* **final tree fits data-parallel**: XGBoost through ``xgboost.dask`` and LightGBM through
  ``lightgbm.dask``, the rows split over the workers as Dask arrays - the way one model is trained
  on more rows than one machine holds. Their histograms are built from per-worker sketches, so
  they are not bit-identical to a local fit, nor to each other from run to run: the test holds
  them to the stated tolerance (``FINAL_TOLERANCE``). The fitted boosters come back as the plain ``XGBClassifier`` /
  ``LGBMClassifier`` a local run makes, so the ensemble, MLflow, serving and backtests do not
  know where a model was trained. The sequence nets' final fits are tasks, like the folds.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from qt.config import Params
from training.inputs import ModelInputs, fit_on_rows
from training.models import (
    SEQUENCE_MEMBERS,
    make_lightgbm,
    make_xgboost,
    predict_up_probability,
)

log = logging.getLogger(__name__)
# A final tree fit on the cluster vs locally, on the same rows (its histograms come from per-worker
# sketches, and which rows land on which worker varies run to run): the holdout predictions of the
# two ensembles agree to these bounds (tests/training/test_cluster_fit.py; measured on 4 synthetic
# symbols x 1500 bars, 40 trees: AUC within 0.002-0.006, mean |dP| 0.003-0.021, Spearman 0.997).
FINAL_TOLERANCE = {"auc": 0.02, "mean_abs_prob": 0.03, "spearman": 0.9}


def _fold_task(name: str, series: pd.DataFrame, tr: np.ndarray, te: np.ndarray, up: np.ndarray, params: Params,
               inputs: ModelInputs, columns: list[str]) -> np.ndarray:
    """One (fold, member): fit on ``tr``, P(up) of ``te`` - on a worker."""
    member = fit_on_rows(name, series, tr, up, params, inputs, columns)
    return inputs.predict(lambda x: predict_up_probability(member, x), te, columns)


def _final_task(name: str, series: pd.DataFrame, up: np.ndarray, params: Params, inputs: ModelInputs,
                columns: list[str]):
    return fit_on_rows(name, series, np.arange(len(inputs)), up, params, inputs, columns)


class ClusterTraining:
    """The training inputs scattered to every worker once, and the fits made from them."""

    def __init__(self, client, series: pd.DataFrame, up: np.ndarray, params: Params, inputs: ModelInputs,
                 by_member: dict[str, list[str]]):
        self.client, self.up, self.params, self.inputs, self.by_member = client, up, params, inputs, by_member
        self._series, self._up, self._inputs = client.scatter([series, up, inputs], broadcast=True, hash=False)

    def fold_predictions(self, names: list[str],
                         folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[tuple[int, int], np.ndarray]:
        """{(fold, member index): out-of-fold P(up) of that fold's test rows}, every pair a task."""
        futures = {(f, j): self.client.submit(_fold_task, name, self._series, tr, te, self._up, self.params,
                                              self._inputs, self.by_member[name], pure=False,
                                              key=f"fold-{f}-{name}-{id(self)}")
                   for f, (tr, te) in enumerate(folds) for j, name in enumerate(names)}
        return dict(zip(futures, self.client.gather(list(futures.values()))))

    def final_members(self, names: list[str]) -> dict[str, object]:
        """Each member fitted on all training rows: trees data-parallel, sequence nets as tasks."""
        futures = {n: self.client.submit(_final_task, n, self._series, self._up, self.params, self._inputs,
                                         self.by_member[n], pure=False, key=f"final-{n}-{id(self)}")
                   for n in names if n in SEQUENCE_MEMBERS}
        out = {name: _tree_on_cluster(self.client, name, self.inputs.matrix(np.arange(len(self.inputs)),
                                                                            self.by_member[name]),
                                      self.up, self.params)
               for name in names if name not in SEQUENCE_MEMBERS}
        out.update({name: fut.result() for name, fut in futures.items()})
        return {name: out[name] for name in names}


def _tree_on_cluster(client, name: str, x: np.ndarray, up: np.ndarray, params: Params):
    """An ``xgboost.dask`` / ``lightgbm.dask`` fit over the workers, returned as the local classifier."""
    import dask.array as da

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    rows = max(1, math.ceil(len(x) / workers))
    dx = da.from_array(np.asarray(x, dtype=np.float64), chunks=(rows, x.shape[1]))
    dy = da.from_array(np.asarray(up, dtype=np.int64), chunks=(rows,))
    if name == "xgboost":
        from xgboost import XGBClassifier
        from xgboost.dask import DaskXGBClassifier

        local = make_xgboost(params.train)
        model = DaskXGBClassifier(**local.get_params())
        model.client = client
        model.fit(dx, dy)
        with tempfile.TemporaryDirectory() as tmp:  # the sklearn wrapper's own format: loads as local
            path = Path(tmp) / "model.json"
            model.save_model(path)
            fitted = XGBClassifier()
            fitted.load_model(path)
        fitted.set_params(n_jobs=local.n_jobs)  # the thread cap a local member predicts with
        return fitted
    if name == "lightgbm":
        from lightgbm.dask import DaskLGBMClassifier

        local = make_lightgbm(params.train)
        model = DaskLGBMClassifier(client=client, **local.get_params())
        model.fit(dx, dy)
        return model.to_local()
    raise ValueError(f"no cluster fit for member {name!r}")
