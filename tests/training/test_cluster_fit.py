"""Training on a Dask LocalCluster of two workers (``runner.task_runner: dask``) against the local run.

Why: issue 18's scale-out - the fold fits become Dask tasks and the final tree fits go through
``xgboost.dask`` / ``lightgbm.dask`` - must not change what is learned beyond the stated tolerance:
the walk-forward folds run the very same fits (equal out-of-fold metrics), the data-parallel final
fits agree with local ones within ``training.cluster_fit.FINAL_TOLERANCE``, and the ensemble that
comes back is the plain local kind (it pickles, and predicts what training reported).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.stats import spearmanr

from features.store import read_features, read_labels
from tests.training.support import build_state, make_params
from training.cluster_fit import FINAL_TOLERANCE
from training.train import train_models

pytestmark = pytest.mark.slow

MEMBERS = ["xgboost", "lightgbm", "nhits"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from qt.cluster import dask_client

    params = make_params(0.3, 1500, data={"source": "synthetic:3"},
                         train={"members": MEMBERS, "sequence_length": 16, "nhits": {"max_steps": 20},
                                "xgboost": {"n_estimators": 40}, "lightgbm": {"n_estimators": 40}},
                         runner={"task_runner": "dask", "workers": 2})
    paths = build_state(tmp_path_factory.mktemp("cluster-fit"), params, 3)
    feats, labels = read_features(paths.features, params.data.symbols), read_labels(paths.features, params.data.symbols)
    local = train_models(feats, labels, params)
    with dask_client(params.runner) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = train_models(feats, labels, params, cluster=client)
    return local, remote, feats


def test_fold_fits_on_the_cluster_equal_the_local_ones(both):
    local, remote, _ = both
    for a, b in zip(local.models, remote.models):
        assert a["name"] == b["name"]
        assert a["cv"] == b["cv"], a["name"]  # every fold's metrics, exactly
    assert local.ensemble.weights == remote.ensemble.weights  # fitted on those out-of-fold predictions
    assert local.rows == remote.rows


def test_final_fits_on_the_cluster_agree_with_local_within_the_stated_tolerance(both):
    local, remote, _ = both
    p_local, p_remote = local.holdout_predictions["prob_up"], remote.holdout_predictions["prob_up"]
    assert (local.holdout_predictions[["symbol", "timestamp"]] == remote.holdout_predictions[["symbol", "timestamp"]]).all().all()
    assert float(np.mean(np.abs(p_local - p_remote))) <= FINAL_TOLERANCE["mean_abs_prob"]
    assert spearmanr(p_local, p_remote).statistic >= FINAL_TOLERANCE["spearman"]
    for a, b in zip(local.models, remote.models):
        assert abs(a["oos"]["auc"] - b["oos"]["auc"]) <= FINAL_TOLERANCE["auc"], a["name"]
    # the sequence net's final fit is a task running the local code: the same network
    np.testing.assert_array_equal(
        local.ensemble.members["nhits"].forecast_sum(np.zeros((1, 16 * 3))),
        remote.ensemble.members["nhits"].forecast_sum(np.zeros((1, 16 * 3))))


def test_the_cluster_ensemble_is_the_local_kind_and_predicts_what_training_reported(both):
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    from features.sequence import add_return_windows

    _, remote, feats = both
    assert isinstance(remote.ensemble.members["xgboost"], XGBClassifier)
    assert isinstance(remote.ensemble.members["lightgbm"], LGBMClassifier)
    again = pickle.loads(pickle.dumps(remote.ensemble))
    rows = add_return_windows(feats, 16, exog=remote.ensemble.sequence_exog)
    rows = rows.merge(remote.holdout_predictions[["symbol", "timestamp", "prob_up"]], on=["symbol", "timestamp"])
    np.testing.assert_array_equal(again.predict_frame(rows)["prob_up"].to_numpy(), rows["prob_up"].to_numpy())
