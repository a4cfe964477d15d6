"""`qt tune`'s pieces that need no fitted model: the deflated Sharpe with the trials' Sharpe variance
against Bailey & Lopez de Prado's formula written out here, how a study's N and variance are counted
from its storage, how a trial's params are built and refused, and the CLI's one-line refusals.

Why: the search is only honest if these numbers are right; a fit or a backtest adds nothing to them.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from scipy.stats import kurtosis, norm, skew

from qt.config import Params, load_params
from qt.errors import ConfigError
from qt.tuneparams import TuneParams
from training.gates import deflated_sharpe_probability
from training.tune import check_space, study_statistics, trial_params

from tests.cli.support import assert_one_line_error, run_qt


def _returns(seed: int = 3, n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_t(5, n) * 0.01 + 0.002  # fat tails, a small edge


def _hand_dsr(r: np.ndarray, n: int, variance: float) -> float:
    """Bailey & Lopez de Prado (2014), eq. for the expected maximum Sharpe of N trials and the PSR."""
    gamma = 0.5772156649015329  # Euler-Mascheroni
    t = len(r)
    sr = r.mean() / r.std(ddof=1)
    e_max = math.sqrt(variance) * ((1 - gamma) * norm.ppf(1 - 1 / n) + gamma * norm.ppf(1 - 1 / (n * math.e)))
    g3, g4 = skew(r), kurtosis(r, fisher=False)
    z = (sr - e_max) * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2)
    return float(norm.cdf(z))


def test_deflated_sharpe_uses_the_trials_sharpe_variance():
    r = _returns()
    variance = 0.0004  # the spread of 37 trials' per-bar Sharpes, say
    got = deflated_sharpe_probability(r, 37, variance)
    assert got["dsr"] == pytest.approx(_hand_dsr(r, 37, variance), rel=1e-9)
    # a wider spread of trials means a higher bar to clear
    assert deflated_sharpe_probability(r, 37, 0.004)["dsr"] < got["dsr"]


def test_deflated_sharpe_without_a_variance_keeps_the_null_one():
    r = _returns(seed=4)
    got = deflated_sharpe_probability(r, 12)
    assert got["dsr"] == pytest.approx(_hand_dsr(r, 12, 1.0 / (len(r) - 1)), rel=1e-9)


def _study_with(values_complete, pruned_intermediates, failed: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for v in values_complete:
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=v))
    for steps in pruned_intermediates:
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist,
                                                  state=optuna.trial.TrialState.PRUNED,
                                                  intermediate_values=dict(enumerate(steps))))
    for _ in range(failed):
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist,
                                                  state=optuna.trial.TrialState.FAIL))
    return study


def test_study_counts_completed_and_pruned_trials_and_their_sharpe_variance():
    study = _study_with([0.02, -0.01, 0.05], [[-0.03, -0.05]], failed=2)
    stats = study_statistics(study)
    assert (stats["n_trials"], stats["completed"], stats["pruned"], stats["failed"]) == (4, 3, 1, 2)
    # a pruned trial counts with the mean of the folds it showed: -0.04
    sharpes = [0.02, -0.01, 0.05, -0.04]
    mean = sum(sharpes) / 4
    assert stats["sharpe_variance"] == pytest.approx(sum((s - mean) ** 2 for s in sharpes) / 3)


def test_one_trial_has_no_variance():
    assert study_statistics(_study_with([0.01], [], failed=0))["sharpe_variance"] is None


def test_trial_params_sets_the_sampled_keys_and_revalidates():
    base = Params()
    tp = trial_params(base, {"train.xgboost.max_depth": 6, "signal.buy_threshold": 0.6, "labels.horizon_bars": 8,
                             "train.members": ["lightgbm"]})
    assert tp.train.xgboost["max_depth"] == 6 and tp.signal.buy_threshold == 0.6
    assert tp.labels.horizon_bars == 8 and tp.train.members == ["lightgbm"]
    assert tp.train.xgboost["n_estimators"] == base.train.xgboost["n_estimators"]  # the rest untouched
    with pytest.raises(ConfigError, match="take_profit_pct"):  # below a quarter of the stop: refused
        trial_params(base, {"risk.stop_loss_pct": 0.2, "risk.take_profit_pct": 0.04})


def test_a_space_key_that_params_yaml_does_not_have_is_refused():
    params = load_params(overrides={"tune": {"space": [{"path": "signal.buy_treshold", "low": 0.5, "high": 0.6}]}})
    with pytest.raises(ConfigError, match="signal.buy_treshold"):
        check_space(params, params.tune)
    check_space(Params(), Params().tune)  # the default space names real keys
    hp = load_params(overrides={"tune": {"space": [{"path": "train.xgboost.min_child_weight", "low": 1, "high": 9}]}})
    check_space(hp, hp.tune)  # a member hyper-parameter absent from the default dict may be searched


@pytest.mark.parametrize("space, fragment", [
    ([{"path": "signal.buy_threshold", "low": 0.6, "high": 0.5}], "low < high"),
    ([{"path": "train.members", "kind": "categorical"}], "choices"),
    ([{"path": "risk.stop_loss_pct", "low": 0.0, "high": 0.1, "log": True}], "low > 0"),
])
def test_a_malformed_dimension_is_refused(space, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_params(overrides={"tune": {"space": space}})
    assert TuneParams().space  # the default is not empty


@pytest.mark.parametrize("args, fragment", [
    (["--trials", "0"], "--trials 0"),
    (["--workers", "0"], "--workers 0"),
    (["--study", "no spaces please"], "--study"),
    (["--timeout", "-5"], "--timeout"),
    (["--source", "nowhere:x"], "nowhere"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, fragment):
    assert_one_line_error(run_qt(["tune", *args], tmp_path), fragment)


def test_cli_refuses_an_unknown_space_key_before_anything_runs(tmp_path):
    params_file = tmp_path / "p.yaml"
    params_file.write_text("tune:\n  space:\n    - {path: risk.stop_los_pct, low: 0.01, high: 0.05}\n")
    res = run_qt(["tune", "--params", str(params_file)], tmp_path / "home")
    assert_one_line_error(res, "risk.stop_los_pct")
    assert not (tmp_path / "home" / "tune").exists()  # nothing started


def test_progress_is_one_line_per_trial_off_a_terminal():
    import io

    from training.tune_run import Progress

    study = _study_with([0.02, -0.01], [[-0.03]], failed=0)
    stream = io.StringIO()  # not a TTY
    progress = Progress(total=5, already=1, stream=stream)
    for trial in study.trials[1:]:
        progress(study, trial)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("tune: trial 2/5 #2 pruned") and "best 0.0200" in lines[-1] and "eta" in lines[-1]


def test_a_study_resumed_on_other_data_is_refused():
    from qt.errors import UserError
    from training.tune import bind_study_to_data

    study = optuna.create_study(study_name="s", direction="maximize")
    bind_study_to_data(study, "abc")
    bind_study_to_data(study, "abc")  # the same data: resumes
    with pytest.raises(UserError, match="other data"):
        bind_study_to_data(study, "def")
