"""``qt xv report``: the Binance/Bybit basis and funding spread of USDT perpetuals, per month.

Reads both venues' candles and funding - from a ``parquet:DIR`` source laid out like
``../shared/data`` directly, else from the configured source's lake (Bybit's from
``data.sources.venue_lake_root``) - and prints a table and writes ``reports/xv-report.json``.
The figures and their formulas are ``features.xv_report``'s; this module only reads, prints and
writes. Bad input (a spot or unknown symbol, a missing Bybit series) is one line, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.context import load_context
from qt.errors import DataError, UserError

xv_app = typer.Typer(no_args_is_help=True, help="Cross-venue (Binance vs Bybit) comparisons of USDT perpetuals.")

REPORT_FILE = "xv-report.json"


@xv_app.command("report")
def report(
    symbols: Annotated[str, typer.Option("--symbols", help="USDT perpetuals, e.g. BTC/USDT:USDT,ETH/USDT:USDT")],
    start: Annotated[Optional[str], typer.Option("--start", help="first date, inclusive (YYYY-MM-DD)")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="last date, exclusive (YYYY-MM-DD)")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="parquet:DIR (../shared/data layout), "
                                                  "else the configured source's lake")] = None,
    timeframe: Annotated[Optional[str], typer.Option("--timeframe", help="default: data.timeframe")] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="params file (costs: fee_rate, slippage_bps)")]
    = None,
) -> None:
    """Basis (bps), funding spread and the runs where |basis| beats the round-trip cost, per month."""
    from data.venue_pairs import check_perpetual

    p, paths = load_context(params, source, symbols, timeframe, start, end)
    wanted = list(p.data.symbols)
    for sym in wanted:
        try:
            check_perpetual(sym)
        except DataError as exc:
            raise UserError(str(exc)) from None
    result = build_report(p, paths, wanted, start, end)
    paths.reports.mkdir(parents=True, exist_ok=True)
    out = paths.reports / REPORT_FILE
    out.write_text(json.dumps(result, indent=2, allow_nan=False))
    print_report(result)
    typer.echo(f"wrote {out}")


def build_report(p, paths, symbols: list[str], start, end) -> dict:
    """The report dict for ``symbols`` under ``p`` (costs, source, timeframe)."""
    from data.sources import lake_root, parse_source, venue_lake_root
    from data.venue_pairs import read_pair_from_datadir, read_pair_from_lake
    from features.xv_report import cost_block, round_trip_cost_bps, symbol_report
    from qt.timeframes import timeframe_ms, utc_timestamp

    src = parse_source(p.data.source)
    tf = p.data.timeframe
    cost = round_trip_cost_bps(p.costs)
    blocks = {}
    for sym in symbols:
        try:
            if src.kind == "parquet":
                pair = read_pair_from_datadir(src.directory, sym, tf, start, end)
            else:
                pair = read_pair_from_lake(lake_root(p, paths), venue_lake_root(p, paths, "bybit"), sym, tf, start, end)
        except DataError as exc:  # the user asked for a symbol or period the data lacks
            raise UserError(str(exc)) from None
        blocks[sym] = symbol_report(pair.binance, pair.bybit, pair.binance_funding, pair.bybit_funding, cost,
                                    timeframe_ms(tf), utc_timestamp(start), utc_timestamp(end))
    return {"source": src.describe(), "timeframe": tf, "start": start, "end": end, "costs": cost_block(p.costs),
            "symbols": blocks}


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))  # twelve columns: wider than a pipe's 80
    cost = result["costs"]["round_trip_bps"]
    for sym, block in result["symbols"].items():
        table = Table(title=f"{sym}: Bybit vs Binance, bps (round trip {cost:g} bps)")
        for col in ("month", "bars", "basis mean", "median", "p5", "p95", "max |b|", "> cost", "funding/8h",
                    "funding/yr", "opps", "capturable"):
            table.add_column(col, justify="right")
        for row in [*block["months"], {"month": "all", **_whole(block)}]:
            b, f = row["basis_bps"], row["funding_spread"]
            table.add_row(row["month"], str(b["bars"]), _f(b["mean"]), _f(b["median"]), _f(b["p5"]), _f(b["p95"]),
                          _f(b["max_abs"], "{:.2f}"), _f(b["share_above_cost"], "{:.1%}"),
                          _f(f["mean_bps_per_8h"], "{:+.3f}"), _f(f["annualised_pct"], "{:+.2f}%"),
                          str(row["opportunities"]), _f(row["capturable_bps"], "{:.1f}"))
        console.print(table)
        for opp in block["opportunities"][:10]:
            console.print(f"  {opp['start']} -> {opp['end']} {opp['bars']} bar(s) {opp['side']} peak "
                          f"{opp['peak_bps']:.1f} bps, capturable {opp['capturable_bps']:.1f} bps")
        if len(block["opportunities"]) > 10:
            console.print(f"  ... {len(block['opportunities']) - 10} more in the JSON")


def _whole(block: dict) -> dict:
    return {"basis_bps": block["basis_bps"], "funding_spread": block["funding_spread"],
            "opportunities": block["opportunity_count"], "capturable_bps": block["capturable_bps_total"]}


def _f(x, fmt: str = "{:+.2f}") -> str:
    return "-" if x is None else fmt.format(x)
