"""The short human summary printed at the end of ``qt run`` (the JSON has everything)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from qt.paths import StatePaths


def _pct(x, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * float(x):+.2f}%" if signed else f"{100 * float(x):.2f}%"


def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(float(x))


def print_summary(summary: dict, paths: StatePaths, console: Console | None = None) -> None:
    c = console or Console()
    d = summary.get("data", {})
    c.print(f"[bold]data[/]: {d.get('source')} {','.join(d.get('symbols', []))} {d.get('timeframe')} "
            f"{d.get('rows')} rows {d.get('start')} -> {d.get('end')}")
    v = summary.get("validation", {})
    n_warn = sum(1 for f in v.get("failed_expectations", []) if f.get("severity") != "critical")
    c.print(f"[bold]validation[/]: {'passed' if v.get('success') else 'FAILED'} ({n_warn} warning(s))")
    f = summary.get("features", {})
    c.print(f"[bold]features[/]: {f.get('rows')} rows x {len(f.get('columns', []))} columns "
            f"in {f.get('seconds')} s")
    for m in summary.get("models", []):
        oos = m.get("oos", {})
        c.print(f"[bold]model[/] {m.get('name')}: holdout AUC {_num(oos.get('auc'), '{:.3f}')}, "
                f"log loss {_num(oos.get('log_loss'), '{:.4f}')}")
    ev = summary.get("evaluation", {})
    if ev:
        t = Table(title="holdout backtest, net of fees, slippage and funding")
        for col in ("strategy", "net return", "Sharpe", "max DD", "trades", "fees USDT", "funding USDT"):
            t.add_column(col)
        for name, m in ev.items():
            t.add_row(name, _pct(m.get("net_return")), _num(m.get("sharpe")), _pct(m.get("max_drawdown"), signed=False),
                      str(m.get("trades")), _num(m.get("fees")), _num(m.get("funding")))
        c.print(t)
    r = summary.get("registry", {})
    verdict = "[green]promoted to champion[/]" if r.get("promoted") else "[yellow]stays challenger[/]"
    c.print(f"[bold]registry[/]: {r.get('model_name')} v{r.get('version')} {verdict}")
    for reason in r.get("reasons", []):
        c.print(f"  - {reason}")
    s = summary.get("serving", {})
    model = f"model v{s['model_version']}" if s.get("model_version") else \
        "[red]no champion: not ready, every request refused (503)[/]"
    c.print(f"[bold]serving[/]: {model}; {s.get('requests')} requests, "
            f"p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms")
    e = summary.get("executor", {})
    c.print(f"[bold]executor[/] ({e.get('mode')}): {e.get('signals')} signals, {e.get('orders')} orders, "
            f"{e.get('fills')} fills, net PnL {_num(e.get('net_pnl'))} USDT, "
            f"{e.get('open_positions')} open; rejections {e.get('rejections')}")
    parity = e.get("parity_with_backtest")
    if parity:
        verdict = "[green]matches[/]" if parity["match"] else "[red]DOES NOT MATCH[/]"
        c.print(f"[bold]parity[/]: paper replay over HTTP {verdict} the in-process backtest "
                f"({parity['replay_trades']} vs {parity['backtest_trades']} trades, "
                f"{parity['replay_net_pnl']:.2f} vs {parity['backtest_net_pnl']:.2f} USDT)")
    failure = parity_failure(summary)
    if failure:
        c.print(f"[red]{failure}[/]")
    c.print(f"[bold]total[/]: {summary.get('seconds')} s; summary: {paths.reports / 'summary.json'}")


def _leg(leg: dict | None) -> str:
    return "no such trade" if leg is None else \
        f"{leg['purpose']} {leg['side']} {leg['qty']:g} @ {leg['price']:g} at {leg['timestamp']}"


def parity_failure(summary: dict) -> str | None:
    """One line naming what broke the backtest/paper parity (the first diverging trade if known), or None.

    ``qt run`` exits non-zero on it: a paper replay that trades differently from the backtest means
    serving or the executor no longer does what was evaluated, so the run must not look green."""
    parity = (summary.get("executor") or {}).get("parity_with_backtest")
    if not parity or parity.get("match"):
        return None
    first = parity.get("first_divergent_trade")
    where = (f"first divergent trade: {first['symbol']} #{first['index']} backtest {_leg(first['backtest'])} "
             f"vs replay {_leg(first['replay'])}") if first else "every trade leg matches; the PnL differs"
    return (f"parity broken: paper replay {parity['replay_trades']} trades / {parity['replay_net_pnl']:.2f} USDT vs "
            f"backtest {parity['backtest_trades']} trades / {parity['backtest_net_pnl']:.2f} USDT; {where}")
