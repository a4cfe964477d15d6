"""``qt drift``: one drift and decay check of the champion, from the command line.

The same check the daily ``drift`` deployment runs (``flows.drift.run_drift``): PSI per
feature (training window vs the newest bars), the champion's recent predictions vs its holdout
ones, live trades vs its backtest. Past a ``drift:`` threshold it alerts (``notify:``) and
retrains - in this process, since no deployment runs it (``--retrain off`` to only alert).
Prints ``reports/drift.json``'s content.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.context import load_context
from qt.errors import UserError
from qt.paths import default_params_path

RETRAIN_MODES = ("auto", "deployment", "direct", "off")


ParamsOpt = Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")]
RetrainOpt = Annotated[Optional[str], typer.Option(
    "--retrain", help="what a trip starts: auto|deployment|direct|off (default: drift.retrain)")]


def drift(params: ParamsOpt = None, retrain: RetrainOpt = None) -> None:
    """Check the champion for drift and decay; alert and retrain past the drift: thresholds."""

    if retrain is not None and retrain not in RETRAIN_MODES:
        raise UserError(f"--retrain {retrain!r} is not one of {', '.join(RETRAIN_MODES)}")
    _, paths = load_context(params, None, None, None, None, None)  # validates params.yaml, prepares the state dir
    from flows.drift import run_drift

    path = params or default_params_path()
    result = run_drift(str(path) if path else None, str(paths.home), retrain=retrain)
    typer.echo(json.dumps(result, indent=2, default=str))
