"""The deflated Sharpe's N counts every (model, decision config) scored on a holdout, from a ledger
that outlives the MLflow store; cosmetic settings do not inflate it."""

from __future__ import annotations

import json
import subprocess

import pytest

from qt.config import load_params
from qt.paths import PROJECT_ROOT
from training.stages import evaluate_stage, promote_stage, train_stage

from tests.training.support import STRONG_SIGNAL, build_state, make_params

pytestmark = pytest.mark.slow

FAST = {"members": ["xgboost", "lightgbm"], "folds": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("trials_state")
    params = make_params(STRONG_SIGNAL, bars=1200, data={"source": "synthetic:5"}, train=FAST)
    paths = build_state(home, params, 5)
    train_stage(params, paths)
    return params, paths


def _evaluate_and_promote(params, paths) -> dict:
    evaluate_stage(params, paths)
    return promote_stage(params, paths)["registry"]


def test_trials_grow_when_signal_buy_threshold_changes_and_re_promotes(trained):
    params, paths = trained
    first = _evaluate_and_promote(params, paths)
    # the same model and decision config scored again is the same trial
    again = _evaluate_and_promote(params, paths)
    assert again["n_trials"] == first["n_trials"]
    changed = params.model_copy(update={"signal": params.signal.model_copy(
        update={"buy_threshold": params.signal.buy_threshold + 0.02})})
    third = _evaluate_and_promote(changed, paths)
    assert third["n_trials"] == first["n_trials"] + 1
    # where N came from, in the promote record (reports/promote.json is this summary)
    trials = third["trials"]
    assert trials["ledger"] == str(paths.trials_ledger) and paths.trials_ledger.is_file()
    assert trials["n_trials"] == third["n_trials"] and sum(trials["by_origin"].values()) == third["n_trials"]
    assert trials["by_origin"].get("evaluate", 0) >= 2
    # the deflated-Sharpe gate used that N
    dsr = next(g for g in third["gates"] if g["name"] == "deflated_sharpe")
    assert f"best of {third['n_trials']} null trials" in dsr["detail"]


@pytest.mark.parametrize("section,change", [("serving", {"port": 3999}), ("notify", {"telegram_chat_id": "42"}),
                                            ("runner", {"workers": 3}), ("train", {"n_jobs": 1}),
                                            ("train", {"model_name": "other-name"})])
def test_trials_digests_ignore_cosmetic_settings(section, change):
    from training.trials import decision_digest, model_digest

    base, other = load_params(), load_params(overrides={section: change})
    assert model_digest(other) == model_digest(base) and decision_digest(other) == decision_digest(base)
    assert other.digest() != base.digest()  # the old whole-config digest did change


@pytest.mark.parametrize("section,change,digest", [("signal", {"buy_threshold": 0.6}, "decision"),
                                                   ("risk", {"stop_loss_pct": 0.02}, "decision"),
                                                   ("costs", {"fee_rate": 0.002}, "decision"),
                                                   ("features", {"rsi": [7]}, "model"),
                                                   ("train", {"seed": 1}, "model")])
def test_trials_digests_follow_what_changes_a_prediction_or_a_decision(section, change, digest):
    from training.trials import decision_digest, model_digest

    base, other = load_params(), load_params(overrides={section: change})
    changed = {"model": model_digest(other) != model_digest(base),
               "decision": decision_digest(other) != decision_digest(base)}
    assert changed == {"model": digest == "model", "decision": digest == "decision"}


def test_clean_state_keeps_the_trials_ledger_unless_told_to_forget():
    keep = subprocess.run(["make", "-n", "clean-state"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    forget = subprocess.run(["make", "-n", "clean-state", "FORGET_TRIALS=1"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True)
    assert keep.returncode == 0 and forget.returncode == 0, keep.stderr + forget.stderr
    def deleted(out: str) -> str:
        return " ".join(line for line in out.splitlines() if line.startswith("rm "))

    assert "state/mlflow" in deleted(keep.stdout) and "state/trials" not in deleted(keep.stdout)
    assert "state/trials" in deleted(forget.stdout)
    from qt.paths import StatePaths

    assert StatePaths(PROJECT_ROOT / "data").trials_ledger.parent == PROJECT_ROOT / "data" / "trials"
