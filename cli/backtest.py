"""``qt backtest``: any logged model on any source's candles, beside the baselines.

The candles come through the collect stage exactly as the pipeline's do (``data.sources``:
synthetic, parquet:DIR, ccxt), but into a temporary state directory that is deleted
afterwards: a backtest never changes the user's lake. The logic is
``training.backtest_model.backtest_model``; this module only reads, prints and writes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli.context import load_context
from qt.errors import UserError
from qt.timeframes import utc_timestamp

if TYPE_CHECKING:
    import pandas as pd

    from qt.config import Params

# (metric key, row label, format)
_COLUMNS = (("net_return", "net", "{:+.2%}"), ("sharpe", "Sharpe", "{:.2f}"), ("sortino", "Sortino", "{:.2f}"),
            ("max_drawdown", "max DD", "{:.1%}"), ("trades", "trades", "{:.0f}"), ("hit_rate", "hit", "{:.0%}"),
            ("fees", "fees", "{:.0f}"), ("funding", "funding", "{:.0f}"), ("exposure", "exposure", "{:.0%}"),
            # by side (shorts only with risk.allow_short on perpetuals); funding paid +, received -
            ("long_trades", "long trades", "{:.0f}"), ("short_trades", "short trades", "{:.0f}"),
            ("pnl_long_usdt", "pnl long", "{:.0f}"), ("pnl_short_usdt", "pnl short", "{:.0f}"),
            ("funding_long_usdt", "funding long", "{:.0f}"), ("funding_short_usdt", "funding short", "{:.0f}"))


def read_source_candles(params: Params, start: str | None, end: str | None, history_bars: int,
                        feature_params=None) -> tuple[pd.DataFrame, pd.DataFrame | None, object]:
    """(candles, funding or None, Bybit's series or None) of ``params.data`` in
    ``[start - history_bars bars, end)``, collected from ``params.data.source`` into a throw-away
    lake. Bybit's series (``features.materialise.read_other_venue``) only when ``feature_params``
    (the model's) use the cross-venue family; the alt series (``alt.source``) only when they use an
    alt family."""
    import pandas as pd

    from data.lake import read_lake_funding
    from data.sources import collect_stage, lake_root, read_lake, venue_lake_root
    from data.alt_collect import collect_alt
    from features.alt_features import alt_series_needed
    from features.materialise import read_alt_inputs, read_other_venue
    from qt.paths import StatePaths
    from qt.timeframes import timeframe_ms

    first = None
    if start is not None:
        first = (utc_timestamp(start) - pd.Timedelta(milliseconds=timeframe_ms(params.data.timeframe) * (history_bars + 1)))
    data = params.data.model_copy(update={"start": first.isoformat() if first is not None else None, "end": end})
    params = params.model_copy(update={"data": data,
                                       "collect": params.collect.model_copy(update={"universe": "list"})})
    with tempfile.TemporaryDirectory(prefix="qt-backtest-") as tmp:
        paths = StatePaths(Path(tmp)).ensure()
        collect_stage(params, paths)
        candles = read_lake(params, paths)
        funding = read_lake_funding(lake_root(params, paths), params.data.symbols, first, end)
        other = None
        if feature_params is not None and feature_params.xv:
            as_model = params.model_copy(update={"features": feature_params})
            other = read_other_venue(venue_lake_root(params, paths, "bybit"), list(params.data.symbols),
                                     params.data.timeframe, as_model)
        alt = None
        needed = alt_series_needed(feature_params) if feature_params is not None else []
        if needed:  # the model's alt families: the series from alt.source into the throw-away lake
            with_alt = params.model_copy(update={"alt": params.alt.model_copy(update={"series": needed})})
            collect_alt(with_alt, lake_root(params, paths))
        if needed or (feature_params is not None and feature_params.book):  # book: from features.book_lake
            alt = read_alt_inputs(lake_root(params, paths), feature_params)
    return candles, funding, other, alt


def backtest(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion | models:/NAME/3 | runs:/ID/model")],
    source: Annotated[Optional[str], typer.Option("--source", help="synthetic[:SEED] | parquet:DIR | ccxt")] = None,
    symbols: Annotated[Optional[str], typer.Option("--symbols", help="comma-separated (default: the model's)")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="first traded date, inclusive")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="last date, exclusive")] = None,
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", help="default: the model's")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="write the evaluation block as JSON")] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="costs, risk, signal thresholds")] = None,
) -> None:
    """Backtest a logged model on a source's candles beside buy-and-hold, the RSI/MACD rule and flat."""
    from training.backtest_model import backtest_model, history_bars_for_backtest, load_logged_model, logged_metadata

    if start is not None and end is not None:
        if utc_timestamp(start) >= utc_timestamp(end):
            raise UserError(f"--start {start} is not before --end {end}")
    p, paths = load_context(params, source, symbols, timeframe, None, None)
    loaded = load_logged_model(model, paths.tracking_uri)
    md = logged_metadata(loaded)
    data = {"timeframe": timeframe or md["timeframe"]}
    if symbols is None and md.get("symbols"):
        data["symbols"] = list(md["symbols"])
    p = p.model_copy(update={"data": p.data.model_copy(update=data)})
    from qt.config import FeatureParams

    candles, funding, other, alt = read_source_candles(p, start, end, history_bars_for_backtest(md, p.risk.atr_period),
                                                  FeatureParams(**md["feature_params"]))
    evaluation = backtest_model(model, candles, funding, p, start=start, model=loaded, other_venue=other, alt=alt)
    _print_table(evaluation, model, p)
    run_id = getattr(loaded.metadata, "run_id", None)
    typer.echo(_record_trial(evaluation, md, f"run:{run_id}" if run_id else model, p, paths.trials_ledger))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(evaluation, indent=2, allow_nan=False))
        typer.echo(f"wrote {output}")


def _record_trial(evaluation: dict, metadata: dict, fallback_id: str, params: Params, ledger_path: Path) -> str:
    """A backtest is a try a person can pick a winner from: record it in the trial ledger
    (``training.trials``) -> the line saying what the deflated Sharpe's N is now. ``fallback_id``
    names a model logged before models carried their digest (its run); bars: 0 (not reported)."""
    import math

    from executor.backtest import bars_per_year
    from qt.timeframes import timeframe_ms
    from training.trials import Trial, TrialLedger, decision_digest, describe, model_identity

    strat = evaluation["strategy"]
    per_bar = (strat.get("sharpe") or 0.0) / math.sqrt(bars_per_year(timeframe_ms(params.data.timeframe)))
    model_id = model_identity(metadata.get("model_digest"), metadata.get("training_frame_sha256"), fallback_id)
    ledger = TrialLedger(ledger_path)
    ledger.record(Trial(model_id, decision_digest(params), "backtest", per_bar, 0, params.train.model_name))
    return describe(ledger.summary())


def _print_table(evaluation: dict, model: str, params: Params) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    strat = evaluation["strategy"]
    table = Table(title=f"{model} on {params.data.source} {params.data.timeframe} "
                        f"{', '.join(params.data.symbols)}: {strat['start']} .. {strat['end']} (net of costs)",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    # one row per metric, one column per run: fits an 80-column terminal whatever the metric count
    table.add_column("metric", no_wrap=True)
    for run in evaluation:
        table.add_column(run, justify="right", no_wrap=True)
    for key, header, fmt in _COLUMNS:
        table.add_row(header, *(fmt.format(m[key]) if m.get(key) is not None else "-" for m in evaluation.values()))
    Console().print(table)
