"""The artefacts a person checks before approving a model: plots are real images, the card has the numbers."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from PIL import Image

from executor.backtest import buy_and_hold, flat_baseline
from qt.errors import DataError
from training.report import (TRADING_COLUMNS, calibration_table, equity_and_drawdown_figure, importance_columns,
                             plot_calibration, plot_equity_and_drawdown, plot_feature_importance,
                             render_model_card)

from tests.executor.exec_support import candles_from_rows, params, ts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes=8_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes, f"{path.name} is only {len(data)} bytes: an empty figure?"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] > 300 and img.size[1] > 300


def _importance():
    return pd.DataFrame({"feature": ["rsi_14", "ema_12", "log_ret_1", "atr_14"],
                         "xgboost": [0.4, 0.3, 0.2, 0.1], "lightgbm": [0.1, 0.2, 0.3, 0.4],
                         "nhits": [np.nan] * 4, "ensemble": [0.25, 0.25, 0.25, 0.25]})


def test_feature_importance_plot_is_a_png_and_skips_members_without_importances(tmp_path):
    imp = _importance()
    assert importance_columns(imp) == ["xgboost", "lightgbm", "ensemble"]  # nhits (all NaN) left out
    _assert_png(plot_feature_importance(imp, tmp_path / "fi.png"))


def test_feature_importance_of_sequence_members_only_is_refused(tmp_path):
    imp = pd.DataFrame({"feature": ["a", "b"], "nhits": [np.nan, np.nan], "ensemble": [np.nan, np.nan]})
    with pytest.raises(DataError, match="no member has per-feature importances"):
        plot_feature_importance(imp, tmp_path / "fi.png")


def test_calibration_table_by_hand():
    prob = [0.05, 0.05, 0.55, 0.95, 0.95, 1.0]
    up = [0, 1, 0, 1, 1, 1]
    t = calibration_table(prob, up, bins=10)
    assert t["bin_lo"].tolist() == [0.0, 0.5, 0.9]  # empty bins are left out; 1.0 falls in the last bin
    assert t["count"].tolist() == [2, 1, 3]
    assert t["mean_prob"].tolist() == pytest.approx([0.05, 0.55, (0.95 + 0.95 + 1.0) / 3])
    assert t["freq_up"].tolist() == pytest.approx([0.5, 0.0, 1.0])


@pytest.mark.parametrize("prob, up, match", [([0.2, 1.3], [0, 1], r"\[0, 1\]"), ([0.2, 0.4], [0, 2], "0/1"),
                                             ([0.2], [0, 1], "equal")])
def test_calibration_refuses_bad_inputs(prob, up, match, tmp_path):
    with pytest.raises(DataError, match=match):
        plot_calibration(prob, up, tmp_path / "c.png")


def test_calibration_plot_is_a_png(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.uniform(0.2, 0.8, 2_000)
    up = (rng.uniform(size=2_000) < prob).astype(int)
    _assert_png(plot_calibration(prob, up, tmp_path / "c.png"))


def test_equity_and_drawdown_plot_covers_strategy_and_baselines(tmp_path):
    idx = pd.date_range("2024-01-01", periods=200, freq="h", tz="UTC")
    rng = np.random.default_rng(1)
    eq = {name: pd.Series(10_000 * np.exp(np.cumsum(rng.normal(0, 0.01, 200))), index=idx)
          for name in ("strategy", "buy_and_hold", "rule_rsi_macd")}
    eq["flat"] = pd.Series(10_000.0, index=idx)
    _assert_png(plot_equity_and_drawdown(eq, tmp_path / "eq.png", "holdout"))


def test_equity_and_drawdown_figure_draws_each_curve_and_its_drawdown_from_the_peak():
    idx = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC")
    eq = {"strategy": pd.Series([100.0, 110.0, 99.0, 121.0, 108.9, 130.0], index=idx),
          "buy_and_hold": pd.Series([100.0, 90.0, 95.0, 80.0, 100.0, 120.0], index=idx),
          "flat": pd.Series(100.0, index=idx)}
    # drawdown from the running peak, in percent, by hand
    drawdown = {"strategy": [0.0, 0.0, -10.0, 0.0, -10.0, 0.0],
                "buy_and_hold": [0.0, -10.0, -5.0, -20.0, 0.0, 0.0],
                "flat": [0.0] * 6}
    import matplotlib.pyplot as plt

    fig = equity_and_drawdown_figure(eq, "holdout")
    try:
        ax_eq, ax_dd = fig.axes
        assert ax_eq.get_title() == "holdout"
        for ax, expected in ((ax_eq, {n: list(s) for n, s in eq.items()}), (ax_dd, drawdown)):
            lines = {line.get_label(): line for line in ax.get_lines()}
            assert set(lines) == set(expected)
            for name, values in expected.items():
                np.testing.assert_allclose(np.asarray(lines[name].get_ydata(), dtype=float), values, atol=1e-9)
                assert len(lines[name].get_xdata()) == len(idx)
            assert [t.get_text() for t in ax.get_legend().get_texts()] == list(eq)
    finally:
        plt.close(fig)


# ---- the model card ---------------------------------------------------------------------------
F, S = 0.001, 0.001
PERP = "AAA/USDT:USDT"
BARS = [(100.0, 101.0, 99.0, 100.0), (100.0, 103.0, 99.0, 102.0), (102.0, 104.0, 101.0, 103.0),
        (103.0, 105.0, 102.0, 104.0)]


def _card_inputs():
    p = params(costs={"fee_rate": F, "slippage_bps": 10.0})
    candles = candles_from_rows({PERP: BARS})
    funding = pd.DataFrame({"symbol": PERP, "timestamp": [ts(0), ts(2)], "funding_rate": [0.001, 0.0005]})
    results = {"buy_and_hold": buy_and_hold(candles, p, funding=funding), "flat": flat_baseline(candles, p)}
    train = {"model_name": "qt", "run_id": "abc123", "timeframe": "1h", "symbols": [PERP],
             "models": [{"name": m, "oos": {"auc": 0.51 + k / 100, "log_loss": 0.69, "accuracy": 0.5, "ic": 0.02},
                         "cv": {"auc": 0.5, "log_loss": 0.7, "ic": 0.01}} for k, m in enumerate(["xgboost", "nhits"])]}
    return train, {n: r.metrics for n, r in results.items()}


def _row(card: str, name: str) -> list[str]:
    line = next(ln for ln in card.splitlines() if ln.startswith(f"| {name} |") and len(ln.split("|")) > 10)
    return [c.strip() for c in line.strip("|").split("|")]


def test_model_card_shows_every_baselines_trading_metrics_computed_by_hand():
    train, evaluation = _card_inputs()
    card = render_model_card(train, evaluation)
    qty = 10_000 / (1 + F) / (100.0 * (1 + S))
    funding = qty * 102.0 * 0.0005  # the 02:00 event, marked at the 01:00 close; 00:00 is before the entry
    final = qty * 104.0 * (1 - S) * (1 - F) - funding
    bh = dict(zip(("name",) + TRADING_COLUMNS, _row(card, "buy_and_hold")))
    assert bh["net_return"] == f"{final / 10_000 - 1:.4f}"
    assert bh["net_pnl"] == f"{final - 10_000:.4f}"
    assert bh["funding"] == f"{funding:.4f}"
    assert bh["fees"] == f"{10_000 / (1 + F) * F + qty * 104.0 * (1 - S) * F:.4f}"
    assert bh["exposure"] == f"{1.0:.4f}" and bh["trades"] == "1"
    flat = dict(zip(("name",) + TRADING_COLUMNS, _row(card, "flat")))
    assert {k: flat[k] for k in ("net_return", "sortino", "turnover", "hit_rate", "exposure", "funding")} == \
        {k: f"{0.0:.4f}" for k in ("net_return", "sortino", "turnover", "hit_rate", "exposure", "funding")}


def test_model_card_has_per_model_holdout_metrics_and_gates_when_present():
    train, evaluation = _card_inputs()
    gates = {"version": "3", "promoted": False, "n_trials": 2,
             "gates": [{"name": "beats_buy_and_hold", "passed": False, "value": -0.01, "threshold": 0.0,
                        "detail": "sharpe diff"}]}
    card = render_model_card(train, evaluation, gates, figures=["calibration.png"])
    for k, m in enumerate(["xgboost", "nhits"]):
        assert f"| {m} | {0.51 + k / 100:.4f} | {0.69:.4f} | {0.5:.4f} | {0.02:.4f} |" in card
    assert "| beats_buy_and_hold | NO | -0.0100 | 0.0000 | sharpe diff |" in card
    assert "`calibration.png`" in card
    assert "Promotion" not in render_model_card(train, evaluation)


def test_model_card_shows_how_many_trials_and_where_they_were_counted():
    train, evaluation = _card_inputs()
    trials = {"n_trials": 5, "recorded": 5, "ledger": "/state/trials/ledger.sqlite",
              "by_origin": {"backtest": 1, "evaluate": 3, "promote": 1}, "sharpe_variance": None}
    card = render_model_card(train, evaluation, {"version": "3", "promoted": False, "n_trials": 5,
                                                 "trials": trials, "gates": []})
    line = next(ln for ln in card.splitlines() if "ledger" in ln)
    assert "N=5" in line and "/state/trials/ledger.sqlite" in line
    assert "3 evaluate" in line and "1 backtest" in line and "1 promote" in line


@pytest.mark.parametrize("status", ["compared", "refused"])
def test_model_card_states_the_champion_overlap_bars_used_and_dropped(status):
    train, evaluation = _card_inputs()
    why = f"40 of 100 holdout bars dropped: the champion may have been fitted on them; {status}"
    window = {"status": status, "bars_total": 100, "bars_used": 60, "bars_dropped": 40, "why": why}
    champion = {"version": "2", "overlap": window, **({"refused": why} if status == "refused" else {})}
    card = render_model_card(train, evaluation, {"version": "3", "promoted": False, "n_trials": 1, "gates": [],
                                                 "previous_champion": "2", "champion_evaluation": champion})
    line = next(ln for ln in card.splitlines() if "champion v2" in ln)
    assert status in line and "60" in line and "40" in line and why in line
