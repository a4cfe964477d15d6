"""``qt tune``: the honest strategy search (issue 17), a thin command over ``flows.tune``.

Why its own module: like ``cli/backtest.py``, the command only checks its options, loads the
context and prints; the search is ``training.tune`` / ``training.tune_run``, the stages around it
``flows.tune``. A bad option is one line on stderr and exit 2 (``cli.main``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.context import load_context
from qt.errors import UserError

_STUDY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def tune(
    source: Annotated[Optional[str], typer.Option("--source", help="synthetic[:SEED] | parquet:DIR | ccxt")] = None,
    symbols: Annotated[Optional[str], typer.Option("--symbols", help="comma-separated, e.g. BTC/USDT,ETH/USDT")] = None,
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", help="1m, 5m, 15m, 1h, 4h, 1d")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="first date, inclusive (YYYY-MM-DD)")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="last date, exclusive (YYYY-MM-DD)")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="trials to run now (default tune.trials)")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="seconds; stop starting trials after")] = None,
    workers: Annotated[int, typer.Option("--workers", help="processes sharing the study")] = 1,
    study: Annotated[str, typer.Option("--study", help="study name; the same name resumes it")] = "default",
    params: Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")] = None,
) -> None:
    """Search params.yaml's tune: space on inner folds; train, evaluate once on the holdout and gate the best."""
    if trials is not None and trials < 1:
        raise UserError(f"--trials {trials}: need at least 1")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout {timeout}: need a positive number of seconds")
    if not 1 <= workers <= 16:
        raise UserError(f"--workers {workers}: need 1..16 (sqlite storage serves a few processes)")
    if not _STUDY.match(study):
        raise UserError(f"--study {study!r}: use letters, digits, '_', '-', '.' (up to 100)")
    p, paths = load_context(params, source, symbols, timeframe, start, end)
    from training.tune import check_space

    check_space(p, p.tune)
    from flows.tune import tune_flow

    summary = tune_flow(params=p, home=str(paths.home), study=study, trials=trials, timeout=timeout, workers=workers)
    t, reg = summary["tune"], summary.get("registry", {})
    typer.echo(json.dumps({"tune": t, "promoted": reg.get("promoted"), "version": reg.get("version"),
                           "reasons": reg.get("reasons")}, indent=2, default=str))
    typer.echo(f"study {study}: N={t['n_trials']} ({t['trials_completed']} completed, {t['trials_pruned']} pruned); "
               f"best inner-fold Sharpe {t['best_inner_fold_sharpe']:.4f}/bar; "
               f"{'promoted' if reg.get('promoted') else 'not promoted'}; wrote {t['tuned_params_file']}")
