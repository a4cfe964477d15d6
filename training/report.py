"""What a person reads before approving a model: plots and the model card (files only, no MLflow).

* ``plot_equity_and_drawdown`` - equity and drawdown of the strategy and every baseline
* ``plot_feature_importance`` - per-member and ensemble importances (which inputs it uses)
* ``plot_calibration`` - reliability diagram + histogram of ``prob_up`` on the holdout
  (does 0.7 mean "up 70 % of the time"? the position sizing and thresholds assume so)
* ``render_model_card`` - Markdown: data, ensemble, per-model holdout metrics, trading
  metrics of strategy and baselines (incl. funding), gates when present

The model card is rewritten by each stage (train, evaluate, promote) from the hand-over
JSON, so it always shows everything known so far about the run. Plots use matplotlib's
Agg backend (no display needed in a worker).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from qt.errors import DataError

# trading metrics shown per strategy/baseline (definitions: executor.backtest)
TRADING_COLUMNS = ("net_return", "net_pnl", "sharpe", "sortino", "max_drawdown", "trades", "hit_rate",
                   "turnover", "exposure", "fees", "funding")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_equity_and_drawdown(equities: dict[str, pd.Series], path: Path, title: str) -> Path:
    """PNG with equity (USDT) per strategy/baseline on top and drawdown (%) below."""
    return _save(equity_and_drawdown_figure(equities, title), path)


def equity_and_drawdown_figure(equities: dict[str, pd.Series], title: str):
    """The figure ``plot_equity_and_drawdown`` saves: axes[0] one equity line per non-empty
    series (labelled with its name), axes[1] its drawdown from the running peak in percent.
    Returned open so its content can be checked; the caller closes it."""
    plt = _pyplot()
    fig, (ax_eq, ax_dd) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True,
                                       gridspec_kw={"height_ratios": [2, 1]})
    for name, eq in equities.items():
        if eq is None or len(eq) == 0:
            continue
        ax_eq.plot(eq.index, eq.to_numpy(), label=name, linewidth=1.4 if name == "strategy" else 0.9)
        dd = (eq / eq.cummax() - 1.0) * 100.0
        ax_dd.plot(dd.index, dd.to_numpy(), label=name, linewidth=1.4 if name == "strategy" else 0.9)
    ax_eq.set_ylabel("equity (USDT)")
    ax_eq.set_title(title)
    ax_eq.legend(loc="upper left", fontsize=8)
    ax_eq.grid(alpha=0.3)
    ax_dd.set_ylabel("drawdown (%)")
    ax_dd.grid(alpha=0.3)
    ax_dd.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def importance_columns(importance: pd.DataFrame) -> list[str]:
    """Columns of an importance table worth plotting: every member/ensemble column that is
    not all-NaN (sequence members have no per-feature importance)."""
    if "feature" not in importance.columns:
        raise DataError(f"feature importance table lacks a 'feature' column (has {list(importance.columns)})")
    return [c for c in importance.columns if c != "feature" and not importance[c].isna().all()]


def plot_feature_importance(importance: pd.DataFrame, path: Path, top: int = 20) -> Path:
    """Horizontal grouped bars: the ``top`` features by ensemble importance (by the first
    plottable column when there is no ensemble column), one bar per member and the ensemble.
    Members whose column is all-NaN are left out. ``DataError`` when nothing is plottable."""
    cols = importance_columns(importance)
    if not cols:
        raise DataError("no member has per-feature importances (all columns NaN); nothing to plot")
    key = "ensemble" if "ensemble" in cols else cols[0]
    table = importance.sort_values(key, ascending=False, na_position="last").head(top).iloc[::-1]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(table) + 1.6))
    y = np.arange(len(table))
    height = 0.8 / len(cols)
    for k, col in enumerate(cols):
        ax.barh(y + (k - (len(cols) - 1) / 2) * height, table[col].fillna(0.0).to_numpy(), height=height,
                label=col, edgecolor="black" if col == "ensemble" else None, linewidth=0.5)
    ax.set_yticks(y, table["feature"].astype(str).tolist(), fontsize=8)
    ax.set_xlabel("importance (normalised, sum 1 per member)")
    ax.set_title(f"Feature importance (top {len(table)} by {key})")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def calibration_table(prob_up, up, bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of ``prob_up`` on [0, 1] (the last bin includes 1.0): per non-empty
    bin the mean predicted probability, the observed frequency of ``up`` and the count."""
    p = np.asarray(prob_up, dtype="float64")
    y = np.asarray(up, dtype="float64")
    if len(p) == 0 or len(p) != len(y):
        raise DataError(f"calibration needs equal, non-zero numbers of probabilities and labels "
                        f"(got {len(p)} and {len(y)})")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError("prob_up must be finite probabilities in [0, 1]; check the holdout predictions")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("labels 'up' must be 0/1; check the holdout predictions' 'up' column")
    if bins < 1:
        raise DataError(f"calibration bins must be >= 1 (got {bins})")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        if m.any():
            rows.append((b / bins, (b + 1) / bins, float(p[m].mean()), float(y[m].mean()), int(m.sum())))
    return pd.DataFrame(rows, columns=["bin_lo", "bin_hi", "mean_prob", "freq_up", "count"])


def plot_calibration(prob_up, up, path: Path, bins: int = 10) -> Path:
    """Reliability diagram (observed up-frequency vs mean ``prob_up`` per bin, with the
    diagonal of perfect calibration) over a histogram of ``prob_up``."""
    table = calibration_table(prob_up, up, bins)
    p = np.asarray(prob_up, dtype="float64")
    brier = float(np.mean((p - np.asarray(up, dtype="float64")) ** 2))
    plt = _pyplot()
    fig, (ax_rel, ax_hist) = plt.subplots(2, 1, figsize=(6.5, 7), sharex=True,
                                          gridspec_kw={"height_ratios": [2, 1]})
    ax_rel.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    ax_rel.plot(table["mean_prob"], table["freq_up"], marker="o", label="model")
    ax_rel.set_ylabel("observed frequency of up")
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_title(f"Holdout calibration ({len(p)} rows, Brier {brier:.4f})")
    ax_rel.legend(loc="upper left", fontsize=8)
    ax_rel.grid(alpha=0.3)
    ax_hist.hist(p, bins=np.linspace(0, 1, bins + 1), color="tab:blue", alpha=0.7)
    ax_hist.set_xlabel("prob_up")
    ax_hist.set_ylabel("rows")
    ax_hist.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def describe_label(train: dict) -> str:
    """What ``up`` (and the return ``expected_return`` maps to) was for this model: the target
    logged by the train stage (``labels.target``; forward_return for a run logged before it)."""
    if train.get("label_target") == "triple_barrier":
        return (f"up = the executor's long trade from the next open (stop, take-profit, max-holding exit; triple "
                f"barrier over {train.get('label_reach_bars')} bars) returned > 0; expected_return = that trade's "
                f"log return")
    return f"up = log return over {train.get('horizon_bars')} bars > 0 (forward return)"


def render_model_card(train: dict, evaluation: dict | None = None, registry: dict | None = None,
                      figures: list[str] | None = None) -> str:
    """Markdown model card from the stages' hand-over dicts (``figures``: artefact file names)."""
    lines = [f"# Model card: {train.get('model_name', 'model')} (run {train.get('run_id', '?')})", ""]
    lines += [
        "## Data",
        f"- timeframe: {train.get('timeframe')}; symbols: {', '.join(train.get('symbols', []))}",
        f"- train: {train.get('train_start')} .. {train.get('train_end')} ({train.get('rows', {}).get('train')} rows)",
        f"- holdout: {train.get('holdout_start')} .. {train.get('holdout_end')} "
        f"({train.get('rows', {}).get('holdout')} rows, never seen in fitting)",
        f"- feature set hash: `{train.get('feature_set_hash')}`; data sha256: `{train.get('data_sha256')}`",
        f"- label: {describe_label(train)}",
        "",
        "## Ensemble",
        f"- members and convex weights (log-loss optimal on out-of-fold predictions): {train.get('weights')}",
        f"- expected_return = {_fmt(train.get('return_intercept'))} + {_fmt(train.get('return_slope'))}"
        " * (prob_up - 0.5)  (OLS on out-of-fold predictions)",
        "",
        "## Classification (holdout = oos, walk-forward out-of-fold = cv)",
        "| model | oos auc | oos log_loss | oos accuracy | oos IC | cv auc | cv log_loss | cv IC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in train.get("models", []):
        o, c = m["oos"], m["cv"]
        lines.append(f"| {m['name']} | {_fmt(o['auc'])} | {_fmt(o['log_loss'])} | {_fmt(o['accuracy'])} | "
                     f"{_fmt(o['ic'])} | {_fmt(c['auc'])} | {_fmt(c['log_loss'])} | {_fmt(c['ic'])} |")
    if evaluation:
        lines += ["", "## Holdout backtest (net of fees, slippage and funding)",
                  "| strategy | " + " | ".join(TRADING_COLUMNS) + " |",
                  "|---" * (len(TRADING_COLUMNS) + 1) + "|"]
        for name, m in evaluation.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in TRADING_COLUMNS) + " |")
        lines += ["", "funding: USDT paid by perpetual positions (negative = received); fees, funding and "
                  "net_pnl in USDT; net_return, max_drawdown, hit_rate, exposure as fractions."]
    if figures:
        lines += ["", "## Figures (artefacts of this run)"] + [f"- `{f}`" for f in figures]
    if registry:
        verdict = "PROMOTED to champion" if registry.get("promoted") else "NOT promoted"
        lines += ["", f"## Promotion: version {registry.get('version')} {verdict}",
                  f"- trials counted for the deflated Sharpe: {registry.get('n_trials')}"]
        if registry.get("trials"):  # where N came from: the trial ledger (training.trials)
            from training.trials import describe

            lines.append(f"- {describe(registry['trials'])}")
        window = (registry.get("champion_evaluation") or {}).get("overlap")
        if window:  # which of the holdout bars the champion was scored on (training.champion_window)
            lines.append(f"- champion v{registry['champion_evaluation'].get('version')} comparison "
                         f"{window['status']}: scored on {window['bars_used']} of {window['bars_total']} holdout "
                         f"bars, {window['bars_dropped']} dropped - {window['why']}")
        lines += ["", "| gate | passed | value | threshold | detail |", "|---|---|---|---|---|"]
        for g in registry.get("gates", []):
            lines.append(f"| {g['name']} | {'yes' if g['passed'] else 'NO'} | {_fmt(g['value'])} | "
                         f"{_fmt(g['threshold'])} | {g['detail']} |")
    return "\n".join(lines) + "\n"
