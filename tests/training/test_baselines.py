"""The old system's RSI/MACD rule as a signals frame: same rule, causal, backtestable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from executor.backtest import run_backtest
from qt.config import Params, SyntheticParams
from data.synthetic import generate_market
from training.baselines import make_rule_signals


def _candles(bars: int = 1500, seed: int = 3) -> pd.DataFrame:
    # fat-tailed, clustered noise: RSI extremes with both MACD signs occur
    return generate_market(["BTC/USDT", "ETH/USDT"], "1h", SyntheticParams(bars=bars, signal_strength=0.0), seed)


def test_rule_actions_follow_rsi_and_macd_histogram():
    candles = _candles()
    signals = make_rule_signals(candles)
    assert list(signals.columns) == ["symbol", "timestamp", "action", "confidence", "expected_return",
                                     "model_version"]
    for symbol, sig in signals.groupby("symbol"):
        close = candles.loc[candles["symbol"] == symbol, "close"].to_numpy()
        rsi = talib.RSI(close, timeperiod=14)
        hist = talib.MACD(close, 12, 26, 9)[2]
        defined = np.isfinite(rsi) & np.isfinite(hist)
        rsi, hist = rsi[defined], hist[defined]
        want = np.full(len(rsi), "hold", dtype=object)
        want[(rsi < 30) & (hist > 0)] = "buy"
        want[(rsi > 70) & (hist < 0)] = "sell"
        assert len(sig) == defined.sum()  # warm-up bars (undefined indicators) are absent
        assert (sig["action"].to_numpy() == want).all()
    counts = signals["action"].value_counts()
    assert counts.get("buy", 0) > 0 and counts.get("sell", 0) > 0 and counts["hold"] > counts["buy"]


def test_rule_signal_at_bar_t_ignores_later_bars():
    candles = _candles()
    full = make_rule_signals(candles)
    cut = candles["timestamp"].unique()[1000]
    early = make_rule_signals(candles[candles["timestamp"] <= cut])
    later = full[full["timestamp"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(early.reset_index(drop=True), later)


def test_rule_runs_through_the_same_backtest():
    candles = _candles(800)
    result = run_backtest(candles, make_rule_signals(candles), Params())
    assert {"net_return", "sharpe", "max_drawdown", "trades", "fees"} <= set(result.metrics)
    assert result.metrics["trades"] > 0


def test_the_rule_trades_as_it_did_whatever_the_models_decision_layer_is():
    """A tune trial or params.yaml may set the cost filter or rank mode for the model; the rule has no
    return forecast, so with them it would never enter and the baseline would silently be flat."""
    from training.baselines import RULE_VERSION, rule_params

    candles = _candles(800)
    rule = make_rule_signals(candles)
    plain = run_backtest(candles, rule, rule_params(Params(), RULE_VERSION))
    model_layer = Params.model_validate({"signal": {"min_edge_bps": 10.0, "mode": "rank", "top_k": 1}})
    assert run_backtest(candles, rule, model_layer).metrics["trades"] == 0  # what a baseline must not become
    as_baseline = run_backtest(candles, rule, rule_params(model_layer, RULE_VERSION))
    assert as_baseline.metrics["trades"] == plain.metrics["trades"] > 0
    assert as_baseline.metrics["net_return"] == plain.metrics["net_return"]


PERP = "BTC/USDT:USDT"


def _falling_perp() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A perpetual that falls to a tenth in 20 cycles: a 40-bar rally that stalls (RSI > 70 while
    the MACD histogram turns negative: the rule's sell), then a 16-bar crash. Funding +0.01 % / 8 h."""
    steps = np.tile(np.r_[np.linspace(0.02, -0.002, 40), np.full(16, -0.03)], 20)
    close = 100.0 * np.exp(np.cumsum(steps))
    open_ = np.r_[100.0, close[:-1]]
    stamps = pd.date_range("2024-01-01", periods=len(steps), freq="h", tz="UTC")
    candles = pd.DataFrame({"symbol": PERP, "timestamp": stamps.astype("datetime64[ms, UTC]"), "open": open_,
                            "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
                            "close": close, "volume": 1.0})
    funding = pd.DataFrame({"symbol": PERP, "timestamp": pd.date_range("2024-01-01", periods=len(steps) // 8 + 2,
                                                                       freq="8h", tz="UTC"), "funding_rate": 1e-4})
    return candles, funding


def _evaluate(allow_short: bool):
    from qt.config import load_params
    from training.backtest_model import evaluate_predictions

    candles, funding = _falling_perp()
    params = load_params(overrides={"data": {"symbols": [PERP]}, "risk": {"allow_short": allow_short}})
    holding = candles[["symbol", "timestamp"]].iloc[300:].assign(prob_up=0.5, expected_return=0.0)  # never trades
    return params, *evaluate_predictions(candles, holding, params, "m", funding=funding)


def test_the_short_rule_is_a_baseline_only_when_shorts_are_allowed():
    from training.backtest_model import EVALUATION_KEYS, evaluation_keys
    from training.baselines import RULE_SHORT, baseline_names

    long_only, evaluation, _ = _evaluate(False)
    assert RULE_SHORT not in baseline_names(long_only) and RULE_SHORT not in evaluation
    assert list(evaluation) == list(EVALUATION_KEYS) == list(evaluation_keys(long_only))
    shorting, evaluation, _ = _evaluate(True)
    assert baseline_names(shorting) == ("flat", "buy_and_hold", "rule_rsi_macd", RULE_SHORT)
    assert list(evaluation) == ["strategy", "rule_rsi_macd", RULE_SHORT, "buy_and_hold", "flat"]
    assert list(evaluation) == list(evaluation_keys(shorting))


def test_on_a_falling_perpetual_the_short_rule_holds_shorts_and_the_old_rule_stays_long_only():
    candles, _ = _falling_perp()
    sells = make_rule_signals(candles)["action"].value_counts()
    assert sells.get("sell", 0) > 0 and sells.get("buy", 0) == 0
    _, evaluation, results = _evaluate(True)
    short = results["rule_rsi_macd_short"]
    entries = short.fills[short.fills["purpose"] == "entry"]
    assert len(entries) > 5 and (entries["side"] == "sell").all()  # every entry opens a short
    assert (short.trades["side"] == "short").all() and len(short.trades) == len(entries)
    assert (evaluation["rule_rsi_macd_short"]["short_trades"], evaluation["rule_rsi_macd_short"]["long_trades"]) \
        == (len(entries), 0)
    assert evaluation["rule_rsi_macd_short"]["net_return"] > 0 > evaluation["buy_and_hold"]["net_return"]
    # funding: positive rate, a short receives it
    assert (short.funding["qty"] < 0).all() and (short.funding["amount_usdt"] < 0).all()
    assert evaluation["rule_rsi_macd_short"]["funding_short_usdt"] == pytest.approx(short.funding["amount_usdt"].sum())
    # the old rule with the same signals: a sell while flat opens nothing
    assert results["rule_rsi_macd"].fills.empty and evaluation["rule_rsi_macd"]["trades"] == 0
    assert evaluation["buy_and_hold"]["short_trades"] == 0


def test_the_gates_compare_the_challenger_with_the_short_rule_when_shorts_are_allowed():
    from qt.config import GateParams
    from qt.errors import DataError
    from training.gates import evaluate_gates
    from training.stages import _gate_baselines

    params, evaluation, results = _evaluate(True)
    returns = pd.DataFrame({name: res.bar_returns for name, res in results.items()})
    baselines = _gate_baselines(params, evaluation, returns)
    assert set(baselines) == {"flat", "buy_and_hold", "rule_rsi_macd", "rule_rsi_macd_short"}
    report = evaluate_gates(returns["strategy"], baselines, None, evaluation["strategy"], GateParams(), 1,
                            periods_per_year=8760.0, point_in_time=None)
    gate = next(g for g in report.gates if g["name"] == "sharpe_vs_rule_rsi_macd_short")
    assert not gate["passed"]  # a strategy that never trades does not beat a rule that profits short
    long_only, evaluation_lo, results_lo = _evaluate(False)
    returns_lo = pd.DataFrame({name: res.bar_returns for name, res in results_lo.items()})
    assert "rule_rsi_macd_short" not in _gate_baselines(long_only, evaluation_lo, returns_lo)
    with pytest.raises(DataError, match="evaluate stage again"):  # evaluated long-only, promoted with shorts
        _gate_baselines(params, evaluation_lo, returns_lo)
