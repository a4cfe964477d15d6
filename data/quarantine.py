"""The validate stage: run the suites, quarantine failing symbols, keep a record features trust.

``reports/validation.json`` records, per symbol, whether it passed and the content hash of
the candles that were validated. The features stage reads only symbols that passed, and only
if their candles still hash to what was validated, so bad data never reaches features.
``reports/validation.md`` is the same report for a person.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from data.lake import content_sha256, read_candles
from data.sources import lake_root, with_collected_universe
from data.validate_alt import alt_record, require_alt_validated, stored_alt_series, validate_alt_lake
from data.validate import (CANDLE_SUITE, FUNDING_SUITE, ValidationReport, merge_reports, validate_lake_batch,
                           validate_lake_symbols)
from qt.atomic import write_text_atomic
from qt.config import Params
from qt.errors import DataError
from qt.paths import StatePaths

# symbols per validation task in the flows: large enough that a Great Expectations run's fixed cost
# is paid once per many symbols, small enough that a Dask cluster gets several tasks
VALIDATION_BATCH_SYMBOLS = 64
REPORT_JSON = "validation.json"
REPORT_MD = "validation.md"


def validate_stage(params: Params, paths: StatePaths, now: pd.Timestamp | None = None,
                   map_symbols=None) -> dict:
    """Validate candles (and funding where stored) per symbol; quarantine symbols with errors.

    ``map_symbols`` (``qt.fanout``) runs ``data.validate.validate_lake_batch`` once per batch of
    ``VALIDATION_BATCH_SYMBOLS`` symbols (Prefect tasks on the configured runner in the flows,
    named by the batch's first and last symbol): one Great Expectations run costs ~0.2 s whatever
    its size, so one run per symbol took 2 minutes at 566 symbols. Without it every symbol is
    validated in one run (``validate_lake_symbols``). Either way each symbol's result is what it
    gets validated alone (``data.validate``). They are merged here. Raises DataError only when no symbol passed; the caller decides what a partial
    quarantine means (``qt validate`` exits non-zero, ``qt run`` goes on without them).
    """
    params = with_collected_universe(params, paths)
    if now is None and params.validation.max_staleness_bars is not None:
        now = _collected_at(paths)
    root = lake_root(params, paths)
    symbols = sorted(dict.fromkeys(params.data.symbols))  # the lake's order (read_candles sorts by symbol)
    where = {"root": str(root), "timeframe": params.data.timeframe, "start": params.data.start,
             "end": params.data.end, "params": params.validation, "now": now}
    if map_symbols is None:  # one run over every symbol, split per symbol: the same results, faster
        results = validate_lake_symbols(symbols, **where)
    else:
        size = VALIDATION_BATCH_SYMBOLS
        batches = {(f"{b[0]}..{b[-1]}" if len(b) > 1 else b[0]): b
                   for b in (symbols[i:i + size] for i in range(0, len(symbols), size))}
        results = [r for part in map_symbols(validate_lake_batch, list(batches), members=batches, **where)
                   for r in part]
    by_symbol = {r.symbol: r for r in results}
    report = merge_reports(CANDLE_SUITE, [r.candles for r in results])
    fundings = [r.funding for r in results if r.funding is not None]
    funding_report = merge_reports(FUNDING_SUITE, fundings) if fundings else None
    quarantined = list(report.quarantined)
    if funding_report is not None:
        quarantined += [s for s in funding_report.quarantined if s not in quarantined]
    passed = [s for s in params.data.symbols if s not in quarantined]
    per_symbol = {
        sym: {"status": "quarantined" if sym in quarantined else "passed",
              "rows": report.rows_by_symbol.get(sym, 0),
              "data_sha256": by_symbol[sym].data_sha256}
        for sym in params.data.symbols
    }
    # the hash training records as its data lineage: the candles of the symbols that passed, as
    # one frame (the collect stage's hash when all pass) - so they are read together, here
    lineage = read_candles(root, passed, params.data.timeframe, params.data.start, params.data.end) if passed \
        else None
    # the alt series (data.validate_alt), judged against the candles' end; a failing series is
    # quarantined on its own: the candles still pass, the features stage refuses its families
    series = stored_alt_series(root, list(params.alt.series))
    alt = validate_alt_lake(root, series, params.alt, lineage["timestamp"].max() if lineage is not None else None) \
        if series else None
    record = {
        "suite": report.suite, "success": not quarantined, "rows": report.rows,
        "data_sha256": content_sha256(lineage) if lineage is not None else None,
        "passed_symbols": passed, "quarantined_symbols": quarantined, "symbols": per_symbol,
        "candles": report.to_dict(), "funding": funding_report.to_dict() if funding_report else None,
        "alt": alt_record(alt) if alt is not None else None,
    }
    paths.reports.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.reports / REPORT_JSON, json.dumps(record, indent=2, default=str))
    write_text_atomic(paths.reports / REPORT_MD, render_markdown(report, funding_report, quarantined, alt))
    if not passed:
        raise DataError(report.describe() + f"\nevery symbol is quarantined (see {paths.reports / REPORT_MD}); "
                        "fix or re-collect the data")
    failed = report.failed_expectations + (funding_report.failed_expectations if funding_report else []) \
        + (alt.failed_expectations if alt is not None else [])
    return {"validation": {"suite": report.suite, "success": not quarantined,
                           "passed_symbols": passed, "quarantined_symbols": quarantined,
                           "quarantined_alt": alt.quarantined if alt is not None else [],
                           "failed_expectations": [f.to_dict() for f in failed],
                           "report": str(paths.reports / REPORT_MD)}}


def validated_symbols(params: Params, paths: StatePaths) -> list[str]:
    """Symbols of the collected universe that passed the last validation (DataError if none did)."""
    params = with_collected_universe(params, paths)
    record = _read_record(paths)
    passed = [s for s in params.data.symbols if s in set(record.get("passed_symbols", []))]
    if not passed:
        raise DataError(f"no symbol of {', '.join(params.data.symbols)} passed validation "
                        f"(see {paths.reports / REPORT_MD}); run `qt validate` after fixing the data")
    return passed


def require_validated(candles: pd.DataFrame, paths: StatePaths) -> None:
    """DataError unless every symbol in ``candles`` passed and is unchanged since validation."""
    record = _read_record(paths)
    symbols = record.get("symbols", {})
    for sym in candles["symbol"].unique():
        entry = symbols.get(sym)
        if entry is None:
            raise DataError(f"{sym}: not validated; run `qt validate` first")
        if entry["status"] != "passed":
            raise DataError(f"{sym}: quarantined by the last validation (see {paths.reports / REPORT_MD})")
        if entry["data_sha256"] != content_sha256(_one(candles, sym)):
            raise DataError(f"{sym}: candles changed since they were validated; run `qt validate` again")


def render_markdown(report: ValidationReport, funding: ValidationReport | None, quarantined: list[str],
                    alt: ValidationReport | None = None) -> str:
    lines = ["# Data validation", ""]
    lines.append(f"**Quarantined:** {', '.join(quarantined)}" if quarantined else "**All symbols passed.**")
    if alt is not None and alt.quarantined:
        lines.append(f"**Quarantined alt series:** {', '.join(alt.quarantined)}")
    for rep in (report, funding, alt):
        if rep is None:
            continue
        lines += ["", f"## {rep.suite}: {rep.rows} rows, {len(rep.errors)} error(s), {len(rep.warnings)} warning(s)",
                  "", "| symbol | severity | expectation | column | rows | example |", "|---|---|---|---|---|---|"]
        for f in rep.failed_expectations:
            eg = (f.examples[0] if f.examples else "").replace("|", "\\|")
            lines.append(f"| {f.symbol} | {'ERROR' if f.is_error else 'warning'} | {f.expectation} | "
                         f"{f.column} | {f.count} | {eg} |")
    return "\n".join(lines) + "\n"


def require_alt_passed(paths: StatePaths, needed: list[str]) -> None:
    """DataError unless every alt series of ``needed`` passed the last validation."""
    if needed:
        require_alt_validated(_read_record(paths), needed)


def _collected_at(paths: StatePaths) -> pd.Timestamp:
    """When the last collection finished: freshness is judged against it, not the clock now."""
    record = paths.reports / "collect.json"
    if not record.is_file():
        raise DataError("validation.max_staleness_bars is set but nothing was collected yet; run `qt collect`")
    return pd.Timestamp(json.loads(record.read_text())["data"]["collected_at"])


def _one(candles: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return candles[candles["symbol"] == symbol].reset_index(drop=True)


def _read_record(paths: StatePaths) -> dict:
    path = paths.reports / REPORT_JSON
    if not path.is_file():
        raise DataError("the candles have not been validated; run `qt validate` first")
    return json.loads(path.read_text())
