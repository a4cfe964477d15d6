"""What a person reads about a model: the equity/drawdown plot and the model card (files only).

The model card is rewritten by each stage (train, evaluate, promote) from the hand-over
JSON, so it always shows everything known so far about the run.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def plot_equity_and_drawdown(equities: dict[str, pd.Series], path: Path, title: str) -> Path:
    """PNG with equity (USDT) per strategy/baseline on top and drawdown (%) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def render_model_card(train: dict, evaluation: dict | None = None, registry: dict | None = None) -> str:
    """Markdown model card from the stages' hand-over dicts."""
    lines = [f"# Model card: {train.get('model_name', 'model')} (run {train.get('run_id', '?')})", ""]
    lines += [
        "## Data",
        f"- timeframe: {train.get('timeframe')}; symbols: {', '.join(train.get('symbols', []))}",
        f"- train: {train.get('train_start')} .. {train.get('train_end')} ({train.get('rows', {}).get('train')} rows)",
        f"- holdout: {train.get('holdout_start')} .. {train.get('holdout_end')} "
        f"({train.get('rows', {}).get('holdout')} rows, never seen in fitting)",
        f"- feature set hash: `{train.get('feature_set_hash')}`; data sha256: `{train.get('data_sha256')}`",
        f"- label: up = log return over {train.get('horizon_bars')} bars > 0",
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
        lines += ["", "## Holdout backtest (net of fees and slippage)",
                  "| strategy | net_return | sharpe | max_drawdown | trades | fees |", "|---|---|---|---|---|---|"]
        for name, m in evaluation.items():
            lines.append(f"| {name} | {_fmt(m.get('net_return'))} | {_fmt(m.get('sharpe'))} | "
                         f"{_fmt(m.get('max_drawdown'))} | {_fmt(m.get('trades'))} | {_fmt(m.get('fees'))} |")
    if registry:
        verdict = "PROMOTED to champion" if registry.get("promoted") else "NOT promoted"
        lines += ["", f"## Promotion: version {registry.get('version')} {verdict}",
                  f"- trials counted for the deflated Sharpe: {registry.get('n_trials')}",
                  "| gate | passed | value | threshold | detail |", "|---|---|---|---|---|"]
        for g in registry.get("gates", []):
            lines.append(f"| {g['name']} | {'yes' if g['passed'] else 'NO'} | {_fmt(g['value'])} | "
                         f"{_fmt(g['threshold'])} | {g['detail']} |")
    return "\n".join(lines) + "\n"
