"""`qt tune` end to end on a real state directory (synthetic lake, feature store, MLflow, Optuna sqlite).

Why: the issue's negative control - on pure noise a search of many trials must promote nothing and
its deflated Sharpe must count every trial it ran - plus the two properties that keep the search
honest: a resumed study counts both runs (and a second worker process's trials), and no trial reads
the holdout.
"""

from __future__ import annotations

import json
import os

import optuna
import pandas as pd
import pytest

from qt.config import load_params
from qt.paths import StatePaths
from tests.training.support import STRONG_SIGNAL, make_params
from training.trials import TrialLedger

pytestmark = pytest.mark.slow

# The 50 trials fit: measured here, a trial of the default space (xgboost and/or lightgbm, up
# to 300 trees) on 3 symbols x 2000 1h bars takes ~2.5 s with 3 inner folds (50 trials: 124 s of
# search, 140 s in all), ~1.7 s with 2, so the control searches 2 folds (one calibrates, one is
# traded) on two worker processes (the machine's two cores); its outcome does not depend on the
# order the two workers' trials interleave in.
NOISE_TRIALS = 50
# The positive control: the training positive control's planted market (seed 7) with six symbols and
# 3000 bars, so the holdout (~680 bars of a six-symbol book) has the power to clear the deflated
# Sharpe of 30 trials (measured: on three symbols its per-bar Sharpe of 0.12 scored a deflated
# Sharpe of 0.89), and the default space with smaller forests so 30 trials fit in make test.
PLANTED_TRIALS, PLANTED_BARS = 30, 3000
PLANTED_SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT"]
PLANTED_SPACE = [
    {"path": "train.members", "kind": "categorical", "choices": [["xgboost"], ["lightgbm"], ["xgboost", "lightgbm"]]},
    {"path": "train.xgboost.max_depth", "kind": "int", "low": 2, "high": 6},
    {"path": "train.xgboost.learning_rate", "kind": "float", "low": 0.01, "high": 0.3, "log": True},
    {"path": "train.xgboost.n_estimators", "kind": "int", "low": 30, "high": 120, "step": 30},
    {"path": "train.lightgbm.num_leaves", "kind": "int", "low": 4, "high": 31},
    {"path": "train.lightgbm.learning_rate", "kind": "float", "low": 0.01, "high": 0.3, "log": True},
    {"path": "train.lightgbm.n_estimators", "kind": "int", "low": 30, "high": 120, "step": 30},
    {"path": "signal.buy_threshold", "kind": "float", "low": 0.51, "high": 0.7},
    {"path": "signal.sell_threshold", "kind": "float", "low": 0.3, "high": 0.49},
    {"path": "risk.stop_loss_pct", "kind": "float", "low": 0.01, "high": 0.08},
    {"path": "risk.take_profit_pct", "kind": "float", "low": 0.02, "high": 0.16},
    {"path": "labels.horizon_bars", "kind": "int", "low": 1, "high": 12},
]
FAST_SEARCH = {"members": ["xgboost", "lightgbm"]}
FAMILY_SPACE = [
    {"path": "features.candle_shape", "kind": "categorical", "choices": [False, True]},
    {"path": "features.htf", "kind": "categorical",
     "choices": [[], [{"timeframe": "4h", "base_timeframe": "1h", "rsi": [14]}]]},
    {"path": "features.cross", "kind": "categorical", "choices": [[], [24]]},
]


def _params(seed: int, **tune):
    return make_params(0.0, data={"source": f"synthetic:{seed}"}, train=FAST_SEARCH, tune={"folds": 3, **tune})


def _run(params, home, study, trials, workers=1):
    from flows.tune import tune_flow

    paths = StatePaths(home).ensure()
    os.environ.update(paths.tool_env())
    return tune_flow(params=params, home=str(home), study=study, trials=trials, workers=workers), paths


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    home = tmp_path_factory.mktemp("tune-noise")
    summary, paths = _run(_params(11, folds=2), home, "noise", NOISE_TRIALS, workers=2)
    return summary, paths


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    home = tmp_path_factory.mktemp("tune-planted")
    params = make_params(STRONG_SIGNAL, PLANTED_BARS, data={"source": "synthetic:7", "symbols": PLANTED_SYMBOLS},
                         train=FAST_SEARCH,
                         tune={"folds": 4, "space": PLANTED_SPACE})
    summary, paths = _run(params, home, "planted", PLANTED_TRIALS)
    return summary, paths


def test_positive_control_promotes_and_its_holdout_sharpe_lies_inside_the_studys_interval(planted):
    summary, paths = planted
    promote = json.loads((paths.reports / "promote.json").read_text())["registry"]
    failed = [g for g in promote["gates"] if not g["passed"]]
    assert promote["promoted"] is True, failed
    assert promote["deflated_sharpe_inputs"]["n_trials"] == summary["tune"]["n_trials"] >= PLANTED_TRIALS - \
        summary["tune"]["trials_failed"]
    against = summary["tune"]["holdout_vs_study"]
    assert against["folds"] == 3 and against["holdout_bars"] > 500
    # inside the interval the study reported for its selected score, and inside its prediction
    # interval for a period of the holdout's length (the wider one: regimes included)
    low, high = against["inner_ci95"]
    assert low <= against["holdout_sharpe"] <= high, against
    low, high = against["prediction95"]
    assert against["inside"] is True and low <= against["holdout_sharpe"] <= high, against


def test_negative_control_promotes_nothing_and_counts_every_trial(noise):
    summary, paths = noise
    promote = json.loads((paths.reports / "promote.json").read_text())["registry"]
    assert promote["promoted"] is False and promote["champion"] is None
    tune = summary["tune"]
    assert tune["trials_completed"] + tune["trials_pruned"] == NOISE_TRIALS  # none failed on noise
    dsr_inputs = promote["deflated_sharpe_inputs"]
    assert dsr_inputs["n_trials"] == NOISE_TRIALS == promote["n_trials"]
    assert dsr_inputs["trial_sharpe_variance"] == pytest.approx(tune["trial_sharpe_variance"])
    gate = next(g for g in promote["gates"] if g["name"] == "deflated_sharpe")
    assert f"best of {NOISE_TRIALS} null trials" in gate["detail"]
    # every evaluated trial is in the ledger too
    assert TrialLedger(paths.trials_ledger).summary()["by_origin"]["tune"] == NOISE_TRIALS


def test_summary_has_the_run_schema_and_a_tune_block(noise):
    summary, paths = noise
    on_disk = json.loads((paths.reports / "summary.json").read_text())
    for key in ("data", "validation", "features", "models", "train", "evaluation", "registry", "tune"):
        assert key in on_disk, key
    for key in ("study", "trials_completed", "trials_pruned", "best_inner_fold_sharpe", "selected_params", "seconds"):
        assert key in on_disk["tune"], key


def test_tuned_params_file_is_the_selected_configuration(noise):
    summary, paths = noise
    tuned = load_params(paths.reports / "tuned-params.yaml")
    for path, value in summary["tune"]["selected_params"].items():
        node = tuned.model_dump(mode="json")
        for part in path.split("."):
            node = node[part]
        assert node == value, path
    train = json.loads((paths.models / "train.json").read_text())
    assert train["config_digest"] == tuned.digest()  # the final model is that configuration


def test_no_trial_reads_the_holdout(noise):
    from data.sources import lake_root
    from training.tune import load_tune_data

    summary, paths = noise
    holdout_start = pd.Timestamp(json.loads((paths.models / "train.json").read_text())["holdout_start"])
    base = _params(11, folds=2)
    data = load_tune_data(base, paths, lake_root(base, paths))
    assert data.end < holdout_start and data.holdout_start == holdout_start
    assert data.funding is None or data.funding.empty or data.funding["timestamp"].max() < holdout_start
    # what the trials actually traded, read back from the study's storage
    study = optuna.load_study(study_name="noise", storage=f"sqlite:///{paths.tune_db}")
    ends = [pd.Timestamp(f["test_end"]) for t in study.trials for f in t.user_attrs.get("folds", [])]
    assert ends and max(ends) < holdout_start
    # features.* dimensions: the union of every choice's columns, computed on the whole history,
    # is cut exactly like the store's features (a feature at bar t reads nothing after t)
    families = _params(11, folds=2, space=FAMILY_SPACE)
    union = load_tune_data(families, paths, lake_root(families, paths))
    assert (union.cut, union.holdout_start, union.end) == (data.cut, data.holdout_start, data.end)
    # (whichever of them the store lacks - after the flow it holds the selected configuration's)
    family = ["body_frac", "htf4h_rsi_14", "btc_logret_24", "corr_btc_24"]
    assert set(family) <= set(union.features.columns) and union.features["timestamp"].max() < data.cut
    for column in family:
        assert union.features.loc[union.features[column].notna(), "timestamp"].max() < data.cut, column
    pd.testing.assert_frame_equal(union.features[list(data.features.columns)], data.features)


def test_a_second_qt_tune_resumes_the_study_and_n_counts_both_runs_and_every_worker(tmp_path):
    import yaml

    from tests.cli.support import run_qt

    params = _params(13, pruner_startup_trials=100)  # no pruning: the counts below are exact
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    home = tmp_path / "home"
    first = run_qt(["tune", "--params", str(params_file), "--study", "again", "--trials", "3"], home)
    assert first.returncode == 0, first.stderr[-3000:]
    # a second process takes 2 of the 4 trials of the second run
    second = run_qt(["tune", "--params", str(params_file), "--study", "again", "--trials", "4", "--workers", "2"], home)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "N=7 (7 completed, 0 pruned)" in second.stdout
    paths = StatePaths(home)
    promote = json.loads((paths.reports / "promote.json").read_text())["registry"]
    assert promote["deflated_sharpe_inputs"]["n_trials"] == 7
    study = optuna.load_study(study_name="again", storage=f"sqlite:///{paths.tune_db}")
    assert len(study.trials) == 7
    # one MLflow parent run for the study, one child run per trial
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=paths.tracking_uri)
    exp = client.get_experiment_by_name(f"{params.train.model_name}-tune")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`qt.tune.study` = 'again'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert parents[0].data.metrics["n_trials"] == 7
    assert sorted(int(c.data.tags["qt.tune.trial"]) for c in children) == list(range(7))
    assert "tuned-params.yaml" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    # the worker process is gone
    assert not [ln for ln in _processes() if "training.tune_run" in ln and str(home) in ln]


def _processes() -> list[str]:
    import subprocess

    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()


def test_with_runner_dask_the_other_workers_trials_run_on_the_cluster_and_count(noise, tmp_path):
    """``runner.task_runner: dask``: the second worker's share runs as a task on a LocalCluster (the
    cluster of ``runner:``), in the same study; N counts both, and the cluster's process is gone after."""
    import shutil

    from data.sources import lake_root
    from training.tune_run import run_search

    _, noise_paths = noise
    home = tmp_path / "home"
    shutil.copytree(noise_paths.home, home)  # its lake and feature store; a study of its own
    paths = StatePaths(home)
    os.environ.update(paths.tool_env())
    params = _params(11, folds=2, pruner_startup_trials=100).model_copy(
        update={"runner": load_params(overrides={"runner": {"task_runner": "dask"}}).runner})
    found = run_search(params, paths, lake_root(params, paths), "on-dask", 4, workers=2)
    assert found["statistics"]["n_trials"] == 4
    study = optuna.load_study(study_name="on-dask", storage=f"sqlite:///{paths.tune_db}")
    by_worker = {}
    for t in study.trials:
        by_worker.setdefault(t.user_attrs["worker"], set()).add(t.user_attrs["pid"])
    assert sorted(by_worker) == [0, 1] and by_worker[0] == {os.getpid()}
    (remote,) = by_worker[1]
    assert remote != os.getpid()
    with pytest.raises(ProcessLookupError):  # the LocalCluster's worker process was stopped
        os.kill(remote, 0)
