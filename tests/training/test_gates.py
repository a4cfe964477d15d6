"""Promotion gates on hand-built return series and records: each gate passes and fails when it should."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from qt.config import GateParams
from training.gates import (
    compute_sharpe,
    deflated_sharpe_probability,
    evaluate_gates,
    max_drawdown_gate,
    point_in_time_gate,
    stationary_bootstrap_indices,
)

GATES = GateParams(min_trades=10, min_sharpe_margin=0.0, bootstrap_samples=300, bootstrap_block_bars=10,
                   confidence=0.95, min_deflated_sharpe=0.95)
N_BARS = 1500
INDEX = pd.date_range("2023-01-01", periods=N_BARS, freq="h", tz="UTC")


def _series(values) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), index=INDEX[: len(values)])


def _noise(seed: int, mean: float = 0.0, sd: float = 0.01) -> pd.Series:
    return _series(np.random.default_rng(seed).normal(mean, sd, N_BARS))


def _baselines(buy_and_hold: pd.Series | None = None) -> dict:
    return {
        "flat": {"bar_returns": _series(np.zeros(N_BARS)), "metrics": {"sharpe": 0.0}},
        "buy_and_hold": {"bar_returns": buy_and_hold if buy_and_hold is not None else _noise(1, 0.0001)},
        "rule_rsi_macd": {"bar_returns": _noise(2, -0.0002)},
    }


FEATURE_SET = "f" * 64
PIT_OK = {"feature_set_hash": FEATURE_SET,
          "point_in_time": {"rows_checked": 9000, "lookahead_cuts": 20, "lookahead_violations": 0,
                            "recursive_violations": 0}}


def _metrics(trades: int, max_drawdown: float = 0.05) -> dict:
    return {"trades": trades, "max_drawdown": max_drawdown}


def _evaluate(*args, point_in_time=PIT_OK, **kw):
    """evaluate_gates with a passing point-in-time record of the model's feature set."""
    return evaluate_gates(*args, point_in_time=point_in_time, feature_set_hash=FEATURE_SET, **kw)


def _gate(report, name: str) -> dict:
    return next(g for g in report.gates if g["name"] == name)


def test_sharpe_matches_a_hand_computed_value():
    r = [0.01, -0.01, 0.02, 0.0]
    assert compute_sharpe(r) == pytest.approx(statistics.mean(r) / statistics.stdev(r))
    assert compute_sharpe([0.0, 0.0, 0.0]) == 0.0


def test_a_clearly_skilled_strategy_passes_every_gate():
    strat = _noise(3, mean=0.003)  # per-bar Sharpe 0.3 over 1500 bars: far beyond luck
    report = _evaluate(strat, _baselines(), None, _metrics(120), GATES, n_trials=5)
    assert report.passed, report.reasons()
    names = [g["name"] for g in report.gates]
    assert names == ["min_trades", "sharpe_vs_flat", "sharpe_vs_buy_and_hold", "sharpe_vs_rule_rsi_macd",
                     "bootstrap_vs_best_baseline", "deflated_sharpe", "max_drawdown", "point_in_time"]
    assert report.reasons() == []
    for g in report.gates:  # every number is there for a person to check
        assert set(g) == {"name", "passed", "value", "threshold", "detail"}
        assert math.isfinite(g["value"])


def test_too_few_trades_fails_the_min_trades_gate_only():
    report = _evaluate(_noise(3, mean=0.003), _baselines(), None, _metrics(9), GATES, n_trials=1)
    assert not report.passed
    assert [g["name"] for g in report.failed()] == ["min_trades"]
    assert "9 trades" in report.reasons()[0]


def test_pure_noise_strategy_is_refused_by_the_luck_gates():
    report = _evaluate(_noise(4, mean=0.0), _baselines(), None, _metrics(300), GATES, n_trials=3)
    assert not report.passed
    failed = {g["name"] for g in report.failed()}
    assert "bootstrap_vs_best_baseline" in failed
    assert "deflated_sharpe" in failed
    assert any(r.startswith("deflated_sharpe failed") for r in report.reasons())


def test_strategy_equal_to_buy_and_hold_does_not_beat_it():
    bh = _noise(5, mean=0.003)
    report = _evaluate(bh.copy(), _baselines(buy_and_hold=bh), None, _metrics(50), GATES, n_trials=1)
    assert not _gate(report, "sharpe_vs_buy_and_hold")["passed"]
    assert _gate(report, "sharpe_vs_buy_and_hold")["value"] == pytest.approx(0.0)
    boot = _gate(report, "bootstrap_vs_best_baseline")
    assert not boot["passed"] and "best baseline buy_and_hold" in boot["detail"]
    assert not report.passed


def test_sharpe_margin_is_applied_in_annualised_units():
    strat = _noise(3, mean=0.003)
    per_bar_gap = compute_sharpe(strat.to_numpy())
    margin = per_bar_gap * math.sqrt(8760) + 0.1  # just above the annualised Sharpe vs flat
    gates = GATES.model_copy(update={"min_sharpe_margin": margin})
    report = _evaluate(strat, _baselines(), None, _metrics(100), gates, n_trials=1, periods_per_year=8760)
    flat = _gate(report, "sharpe_vs_flat")
    assert flat["value"] == pytest.approx(per_bar_gap * math.sqrt(8760))
    assert not flat["passed"]


def test_champion_gates_appear_only_with_a_champion_and_refuse_a_worse_challenger():
    strat = _noise(3, mean=0.002)
    without = _evaluate(strat, _baselines(), None, _metrics(100), GATES, n_trials=1)
    assert not any("champion" in g["name"] for g in without.gates)

    better_champion = strat + 0.003  # same noise, higher drift: strictly better every bar
    report = _evaluate(strat, _baselines(), better_champion, _metrics(100), GATES, n_trials=1)
    assert not _gate(report, "sharpe_vs_champion")["passed"]
    assert not _gate(report, "bootstrap_vs_champion")["passed"]
    assert not report.passed

    worse_champion = _noise(7, mean=0.0)
    report = _evaluate(strat, _baselines(), worse_champion, _metrics(100), GATES, n_trials=1)
    assert _gate(report, "sharpe_vs_champion")["passed"]
    assert _gate(report, "bootstrap_vs_champion")["passed"]


def test_bootstrap_is_reproducible_for_a_seed():
    strat = _noise(8, mean=0.0005)
    a = _evaluate(strat, _baselines(), None, _metrics(100), GATES, n_trials=2, seed=11)
    b = _evaluate(strat, _baselines(), None, _metrics(100), GATES, n_trials=2, seed=11)
    assert a.gates == b.gates


def test_deflated_sharpe_of_one_trial_matches_the_closed_form():
    # alternating 0.02, 0.0: mean 0.01, skew 0, Pearson kurtosis 1 -> the PSR denominator is 1;
    # sample sd = 0.01*sqrt(T/(T-1)) -> SR = sqrt((T-1)/T); DSR(1 trial) = Phi(SR * sqrt(T-1)).
    t = 10
    r = [0.02, 0.0] * (t // 2)
    sr = math.sqrt((t - 1) / t)
    out = deflated_sharpe_probability(r, n_trials=1)
    assert out["sharpe"] == pytest.approx(sr)
    assert out["dsr"] == pytest.approx(norm.cdf(sr * math.sqrt(t - 1)))


def test_deflated_sharpe_uses_the_expected_maximum_of_null_trials():
    t = 10
    r = [0.02, 0.0] * (t // 2)
    sr = math.sqrt((t - 1) / t)
    gamma = 0.5772156649015329
    n = 100
    sr_star = math.sqrt(1 / (t - 1)) * ((1 - gamma) * norm.ppf(1 - 1 / n) + gamma * norm.ppf(1 - 1 / (n * math.e)))
    out = deflated_sharpe_probability(r, n_trials=n)
    assert out["sharpe_star"] == pytest.approx(sr_star)
    assert out["dsr"] == pytest.approx(norm.cdf((sr - sr_star) * math.sqrt(t - 1)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_deflated_sharpe_skew_term_has_the_sign_of_bailey_and_lopez_de_prado(sign):
    # Hand-built track record: nine bars of +a and one of sign*b. With p = 1/10 of the bars at the
    # outlier, the population skew of a two-point series is (1 - 2p) / sqrt(p (1 - p)) with the
    # sign of the outlier's side: -8/3 for a loss outlier, +8/3 for a gain outlier; the Pearson
    # kurtosis is (1 - 3p + 3p^2) / (p (1 - p)) = 73/9.
    t, p = 10, 0.1
    a, b = 0.01, 0.03
    r = np.array([a] * 9 + [sign * b])
    g3 = sign * (1 - 2 * p) / math.sqrt(p * (1 - p))  # the outlier's side of the mean: sign * 8/3
    g4 = (1 - 3 * p + 3 * p * p) / (p * (1 - p))
    mean = (9 * a + sign * b) / t
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (t - 1))
    sr = mean / sd
    assert sr > 0  # both records make money; only the shape of their returns differs
    out = deflated_sharpe_probability(r, n_trials=1)
    assert out["skew"] == pytest.approx(g3)
    assert out["kurtosis"] == pytest.approx(g4)
    # Bailey & Lopez de Prado (2012, 2014): PSR = Phi((SR - SR*) sqrt(T-1) / sqrt(1 - g3 SR + (g4-1)/4 SR^2))
    expected = norm.cdf(sr * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2))
    assert out["dsr"] == pytest.approx(expected)
    # the sign of the skew term: with the same Sharpe, a positive skew (SR > 0) makes the estimate
    # more credible than zero skew would, a negative skew less so
    no_skew = norm.cdf(sr * math.sqrt(t - 1) / math.sqrt(1 + (g4 - 1) / 4 * sr ** 2))
    assert (out["dsr"] > no_skew) == (sign > 0)


def test_more_trials_deflate_the_same_track_record():
    strat = _noise(9, mean=0.0008).to_numpy()
    probs = [deflated_sharpe_probability(strat, n)["dsr"] for n in (1, 10, 100, 1000)]
    assert probs == sorted(probs, reverse=True) and probs[0] > probs[-1]


def test_stationary_bootstrap_blocks_have_the_requested_mean_length():
    idx = stationary_bootstrap_indices(5000, 20, 4, np.random.default_rng(0))
    assert idx.shape == (4, 5000) and idx.min() >= 0 and idx.max() < 5000
    breaks = (np.diff(idx, axis=1) % 5000) != 1
    mean_block = idx.shape[1] / (breaks.sum(axis=1).mean() + 1)
    assert 16 < mean_block < 25


def test_drawdown_beyond_the_limit_fails_with_the_numbers():
    report = _evaluate(_noise(3, mean=0.003), _baselines(), None, _metrics(120, max_drawdown=0.31), GATES,
                       n_trials=1)
    assert not report.passed
    assert [g["name"] for g in report.failed()] == ["max_drawdown"]
    reason = report.reasons()[0]
    assert "31.00%" in reason and f"{GATES.max_drawdown:.2%}" in reason


@pytest.mark.parametrize("drawdown, passed", [(0.0, True), (GATES.max_drawdown, True),
                                              (GATES.max_drawdown + 1e-9, False), (None, False)])
def test_drawdown_limit_is_inclusive_and_a_missing_drawdown_fails(drawdown, passed):
    gate = max_drawdown_gate({"max_drawdown": drawdown}, GATES.max_drawdown)
    assert gate.passed is passed


def test_missing_point_in_time_record_fails_and_says_to_rerun_features():
    report = _evaluate(_noise(3, mean=0.003), _baselines(), None, _metrics(120), GATES, n_trials=1,
                       point_in_time=None)
    assert [g["name"] for g in report.failed()] == ["point_in_time"]
    assert "rerun `qt features`" in report.reasons()[0]


@pytest.mark.parametrize("record, fragment", [
    ({"feature_set_hash": FEATURE_SET}, "no lookahead/recursive check result"),
    ({"feature_set_hash": FEATURE_SET, "point_in_time": {"lookahead_violations": 2, "recursive_violations": 0}},
     "2 lookahead and 0 recursive violation(s)"),
    ({"feature_set_hash": FEATURE_SET, "point_in_time": {"lookahead_violations": 0, "recursive_violations": 1}},
     "0 lookahead and 1 recursive violation(s)"),
    ({"feature_set_hash": "a" * 64, "point_in_time": PIT_OK["point_in_time"]}, "but the model was trained on"),
])
def test_failed_or_foreign_point_in_time_record_fails_the_gate(record, fragment):
    gate = point_in_time_gate(record, FEATURE_SET)
    assert not gate.passed
    assert fragment in gate.detail and "rerun `qt features`" in gate.detail


def test_passing_point_in_time_record_of_the_same_feature_set_passes():
    gate = point_in_time_gate(PIT_OK, FEATURE_SET)
    assert gate.passed and gate.value == 0.0
