"""Great Expectations suites for the alt series; a bad series stops before any feature reads it.

One suite per series (``alt_fear_greed``, ``alt_onchain_btc``, ``alt_headlines``), each run on the
stored rows plus derived columns, reported like the candle suites (``data.validate.ValidationReport``;
the "symbol" of a failure is ``alt:<series>``):

* ranges: Fear & Greed 0-100; MVRV > 0; NUPL < 1 (it is 1 - 1/MVRV); realised price > 0; votes >= 0;
* one row per key: no duplicate day (headlines: no duplicate (timestamp, title));
* ``available_at`` not before ``timestamp`` (a value cannot be published before the time it is
  about: the point-in-time rule's floor) and daily series on the 00:00 UTC grid;
* staleness: ``stale_days`` (on the newest row only) = days from the newest value to the data end
  (the candles' last bar), at most ``alt.max_staleness_days``;
* an unreadable partition is a critical failure of its series (``unreadable_parquet``), like a
  corrupt candle file.

Every failure is critical: the series is quarantined (``validation.json``'s ``alt`` record), and
the features stage refuses an enabled alt family whose series did not pass (``require_alt_validated``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data.alt_lake import DAY_MS, SERIES, alt_dir, read_alt
from data.validate import FailedExpectation, ValidationReport, merge_reports, run_suite
from qt.config import AltParams
from qt.errors import DataError

ALT_SUITE = "alt"
_DAILY = ("fear_greed", "onchain_btc")


def stored_alt_series(root: Path, listed: list[str]) -> list[str]:
    """``listed`` plus every series with files under ``root/alt`` (what a features run could read)."""
    present = [n for n in SERIES if any(alt_dir(root, n).glob("*.parquet"))]
    return list(dict.fromkeys([*listed, *present]))


def validate_alt_lake(root: Path, series: list[str], params: AltParams,
                      data_end: pd.Timestamp | None) -> ValidationReport:
    """Each series' suite on its stored rows, merged into one report (suite ``alt``)."""
    reports = []
    for name in series:
        try:
            frame = read_alt(Path(root), name)
        except DataError as exc:
            reports.append(ValidationReport(ALT_SUITE, {f"alt:{name}": 0}, [
                FailedExpectation(f"alt:{name}", "unreadable_parquet", "*", "critical", 1, [str(exc)])]))
            continue
        reports.append(validate_alt(frame, name, params, data_end))
    return merge_reports(ALT_SUITE, reports)


def validate_alt(frame: pd.DataFrame, name: str, params: AltParams, data_end: pd.Timestamp | None) -> ValidationReport:
    """The ``name`` series' suite on ``frame`` (the lake's columns, rows in stored order)."""
    label = f"alt:{name}"
    if frame.empty:
        return ValidationReport(ALT_SUITE, {label: 0}, [
            FailedExpectation(label, "expect_rows", "*", "critical", 1, ["no rows stored; collect the series"])])
    checked = _derive(frame, label, data_end)
    report = run_suite(checked, (f"alt_{name}", params.max_staleness_days, data_end is not None),
                       lambda gx, gxe: _suite(gx, gxe, name, params, data_end is not None))
    return ValidationReport(ALT_SUITE, report.rows_by_symbol, report.failed_expectations)


def _derive(frame: pd.DataFrame, label: str, data_end: pd.Timestamp | None) -> pd.DataFrame:
    df = frame.reset_index(drop=True).copy()
    df.insert(0, "symbol", label)
    ts_ms = df["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    df["lead_ms"] = (df["available_at"].to_numpy(dtype="datetime64[ms]").view("int64") - ts_ms).astype("float64")
    df["off_grid_ms"] = (ts_ms % DAY_MS).astype("float64")
    df["row_in_symbol"] = np.arange(len(df))
    stale = np.full(len(df), np.nan)
    if data_end is not None:
        stale[int(np.argmax(ts_ms))] = (pd.Timestamp(data_end).value // 1_000_000 - ts_ms.max()) / DAY_MS
    df["stale_days"] = stale
    return df


def _suite(gx, gxe, name: str, params: AltParams, check_staleness: bool):
    suite = gx.ExpectationSuite(name=f"alt_{name}")
    add = suite.add_expectation
    spec = SERIES[name]
    add(gxe.ExpectTableColumnsToMatchSet(column_set=["symbol", *spec.columns], exact_match=False))
    for col in ("timestamp", "available_at"):
        add(gxe.ExpectColumnValuesToNotBeNull(column=col))
    add(gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", *spec.keys]))
    add(gxe.ExpectColumnValuesToBeBetween(column="lead_ms", min_value=0))
    if name in _DAILY:
        add(gxe.ExpectColumnValuesToBeBetween(column="off_grid_ms", min_value=0, max_value=0))
    if name == "fear_greed":
        add(gxe.ExpectColumnValuesToNotBeNull(column="value"))
        add(gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=100))
    elif name == "onchain_btc":
        add(gxe.ExpectColumnValuesToBeBetween(column="mvrv", min_value=0, strict_min=True))
        add(gxe.ExpectColumnValuesToBeBetween(column="nupl", max_value=1, strict_max=True))
        add(gxe.ExpectColumnValuesToBeBetween(column="realized_price", min_value=0, strict_min=True))
    else:
        add(gxe.ExpectColumnValuesToNotBeNull(column="title"))
        for col, _ in spec.values:
            if col.startswith("votes_"):
                add(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0))
    if check_staleness:
        add(gxe.ExpectColumnValuesToBeBetween(column="stale_days", max_value=params.max_staleness_days))
    return suite


def alt_record(report: ValidationReport) -> dict:
    """The ``alt`` block of ``validation.json``: the report plus each series' status."""
    bad = set(report.quarantined)
    return report.to_dict() | {"series": {s.split(":", 1)[1]: ("quarantined" if s in bad else "passed")
                                          for s in report.rows_by_symbol}}


def require_alt_validated(record: dict, needed: list[str]) -> None:
    """DataError unless every series of ``needed`` passed the last validation (``validation.json``)."""
    status = (record.get("alt") or {}).get("series", {})
    for name in needed:
        if status.get(name) != "passed":
            why = "was quarantined" if status.get(name) == "quarantined" else "was not validated"
            raise DataError(f"the alt features need the {name} series, which {why} (see reports/validation.md); "
                            f"fix or re-collect it (alt.series), or switch its features off")
