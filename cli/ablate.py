"""``qt ablate``: is a feature family worth keeping? (issue 20), a thin command over ``flows.ablate``.

Why its own module: like ``cli/tune.py``, the command checks its options, loads the context and
prints - a rich table on a terminal, plain lines otherwise - while the work is
``training.ablate``. A bad option is one line on stderr and exit 2 (``cli.main``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.context import load_context
from qt.errors import UserError

MEMBERS = ("xgboost", "lightgbm", "nhits", "patchtst")


def ablate(
    family: Annotated[str, typer.Option("--family", help="feature family: candle_shape, htf, funding, basis, ...")],
    source: Annotated[Optional[str], typer.Option("--source", help="synthetic[:SEED] | parquet:DIR | ccxt")] = None,
    symbols: Annotated[Optional[str], typer.Option("--symbols", help="comma-separated, e.g. BTC/USDT,ETH/USDT")] = None,
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", help="1m, 5m, 15m, 1h, 4h, 1d")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="first date, inclusive (YYYY-MM-DD)")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="last date, exclusive (YYYY-MM-DD)")] = None,
    members: Annotated[Optional[str], typer.Option(
        "--members", help="comma-separated members to ablate (default: xgboost,lightgbm, the fast ones)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="train.seed of both arms (and the bootstrap's)")] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")] = None,
) -> None:
    """Train with and without a feature family on the same folds; report the changes with paired bootstrap CIs."""
    from features.families import FAMILIES

    if family not in FAMILIES:
        raise UserError(f"--family {family!r} is not a known feature family; choose from {', '.join(sorted(FAMILIES))}")
    chosen = None
    if members is not None:
        chosen = [m.strip() for m in members.split(",") if m.strip()]
        bad = [m for m in chosen if m not in MEMBERS]
        if not chosen or bad:
            raise UserError(f"--members {members!r}: choose from {', '.join(MEMBERS)}")
    p, paths = load_context(params, source, symbols, timeframe, start, end)
    if seed is not None:
        p = p.model_copy(update={"train": p.train.model_copy(update={"seed": seed})})
    from flows.ablate import ablate as run

    report = run(p, paths, family, chosen, progress=_progress())
    show(report)


def _progress():
    t0 = time.perf_counter()

    def line(arm: str, block: dict) -> None:
        print(f"ablate: arm {arm:7s} block {block['fold']!s:7s} Sharpe {block['sharpe']:+.4f}/bar "
              f"trades {block['trades']} elapsed {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)

    return line


def show(report: dict, stream=None) -> None:
    """The changes as a rich table on a terminal, tab-separated lines otherwise; then the verdict."""
    from training.ablate_record import summary_rows

    stream = stream or sys.stdout
    header = ("part", "metric", "without", "with", "change", "interval")
    rows = summary_rows(report)
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"qt ablate --family {report['family']} ({', '.join(report['members'])})")
        for h in header:
            table.add_column(h, justify="left" if h in ("part", "metric", "interval") else "right")
        for r in rows:
            table.add_row(*r)
        Console(file=stream).print(table)
    else:
        print("\t".join(header), file=stream)
        for r in rows:
            print("\t".join(r), file=stream)
    v = report["verdict"]
    print(f"{'keep' if v['keep'] else 'do not keep'} {report['family']}: {v['why']}; {report['members_note']}; "
          f"wrote {', '.join(report['files'])}", file=stream)
