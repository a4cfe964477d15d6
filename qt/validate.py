"""Candle validation with a Great Expectations suite; bad data stops here.

The suite runs on the tidy candle frame plus three derived, per-symbol columns
(``step_ms``: time since the previous candle; ``logret``: log return from the previous
close; ``spike_log``: size of a jump-and-revert bar that is disconnected from its
neighbours). Expectations of severity ``critical`` are errors (NaN, non-positive
prices, high < low, OHLC out of the high/low range, duplicated or out-of-order
timestamps, one-bar spikes); ``warning`` ones (exchange gaps, very large moves)
are reported but do not fail the batch. Every failure names its rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from qt.config import ValidationParams
from qt.synthetic import timeframe_ms

SUITE_NAME = "candles"
_PRICE_COLUMNS = ["open", "high", "low", "close"]
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    column: str
    severity: str  # "critical" (error) or "warning"
    count: int
    examples: list[str]  # "BTC/USDT 2024-01-01T05:00:00+00:00 high=1.0 low=2.0"

    def to_dict(self) -> dict:
        return {"expectation": self.expectation, "column": self.column, "severity": self.severity,
                "count": self.count, "examples": self.examples}


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    success: bool
    rows: int
    failed_expectations: list[FailedExpectation] = field(default_factory=list)

    @property
    def errors(self) -> list[FailedExpectation]:
        return [f for f in self.failed_expectations if f.severity == "critical"]

    @property
    def warnings(self) -> list[FailedExpectation]:
        return [f for f in self.failed_expectations if f.severity != "critical"]

    def to_dict(self) -> dict:
        return {"suite": self.suite, "success": self.success, "rows": self.rows,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "failed_expectations": [f.to_dict() for f in self.failed_expectations]}

    def describe(self) -> str:
        """Human-readable report: one line per failed expectation plus its first rows."""
        head = f"validation {'passed' if self.success else 'FAILED'}: {self.rows} rows, " \
               f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        lines = [head]
        for f in self.failed_expectations:
            kind = "ERROR" if f.severity == "critical" else "warning"
            lines.append(f"  {kind}: {f.expectation} on {f.column}: {f.count} row(s), e.g. {f.examples[0]}"
                         if f.examples else f"  {kind}: {f.expectation} on {f.column}: {f.count} row(s)")
        return "\n".join(lines)


def derive_checks(candles: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Add ``step_ms``, ``logret``, ``open_gap_log`` and ``spike_log`` per symbol (pure).

    The input order is kept (not sorted) so out-of-order rows show up as ``step_ms <= 0``.
    """
    df = candles.reset_index(drop=True).copy()
    ts_ms = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ms, UTC]").astype("int64")
    g = df.groupby("symbol", sort=False)
    prev_ts = ts_ms.groupby(df["symbol"], sort=False).shift(1)
    df["step_ms"] = (ts_ms - prev_ts).fillna(timeframe_ms(timeframe)).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        prev_close = g["close"].shift(1)
        logret = np.log(df["close"] / prev_close)
        gap = np.log(df["open"] / prev_close).abs()
    logret = logret.where(np.isfinite(logret), np.nan)
    df["logret"] = logret.fillna(0.0)
    df["open_gap_log"] = gap.where(np.isfinite(gap), 0.0).fillna(0.0)
    nxt = df.groupby("symbol", sort=False)["logret"].shift(-1).fillna(0.0)
    nxt_gap = df.groupby("symbol", sort=False)["open_gap_log"].shift(-1).fillna(0.0)
    reverts = np.sign(df["logret"]) * np.sign(nxt) < 0
    size = np.minimum(df["logret"].abs(), nxt.abs())
    disconnected = np.maximum(df["open_gap_log"], nxt_gap) > 0.5 * size
    df["spike_log"] = np.where(reverts & disconnected, size, 0.0)
    df["abs_logret"] = df["logret"].abs()
    return df


def _build_suite(gx, gxe, params: ValidationParams, timeframe: str):
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    add = suite.add_expectation
    for col in ["timestamp", *_PRICE_COLUMNS, "volume"]:
        add(gxe.ExpectColumnValuesToNotBeNull(column=col))
    for col in _PRICE_COLUMNS:
        add(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0, strict_min=True))
    add(gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0))
    add(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="low", or_equal=True))
    for col in ("open", "close"):
        add(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B=col, or_equal=True))
        add(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=col, column_B="low", or_equal=True))
    add(gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "timestamp"]))
    add(gxe.ExpectColumnValuesToBeBetween(column="step_ms", min_value=0, strict_min=True))
    add(gxe.ExpectColumnValuesToBeBetween(column="spike_log", max_value=params.max_spike_log_return))
    gap_severity = "warning" if params.allow_gaps else "critical"
    add(gxe.ExpectColumnValuesToBeBetween(column="step_ms", max_value=timeframe_ms(timeframe),
                                          severity=gap_severity))
    add(gxe.ExpectColumnValuesToBeBetween(column="abs_logret", max_value=params.large_move_log_return,
                                          severity="warning"))
    return suite


def validate_candles(candles: pd.DataFrame, timeframe: str, params: ValidationParams) -> ValidationReport:
    """Run the GX suite on ``candles``; success means no critical expectation failed."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations import expectations as gxe

    checked = derive_checks(candles, timeframe)
    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - progress bars are cosmetic
        pass
    asset = ctx.data_sources.add_pandas("candles").add_dataframe_asset("candles")
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(_build_suite(gx, gxe, params, timeframe))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="candles", data=batch, suite=suite))
    result = vd.run(batch_parameters={"dataframe": checked},
                    result_format={"result_format": "COMPLETE"})
    failed = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kw = cfg.kwargs
        column = kw.get("column") or ",".join(
            str(x) for x in (kw.get("column_A"), kw.get("column_B")) if x) or ",".join(kw.get("column_list", []))
        idx = list(r.result.get("unexpected_index_list") or [])
        examples = [_describe_row(checked, i, column) for i in idx[:_MAX_EXAMPLES]]
        severity = getattr(cfg.severity, "value", str(cfg.severity)).lower()
        failed.append(FailedExpectation(cfg.type, column, severity,
                                        int(r.result.get("unexpected_count") or len(idx)), examples))
    failed.sort(key=lambda f: (f.severity != "critical", f.expectation))
    success = not any(f.severity == "critical" for f in failed)
    return ValidationReport(SUITE_NAME, success, len(checked), failed)


def _describe_row(df: pd.DataFrame, i, column: str) -> str:
    if isinstance(i, dict):  # compound-uniqueness results come as dicts of the key columns
        return " ".join(f"{k}={v}" for k, v in i.items())
    row = df.loc[i]
    cols = [c for c in column.split(",") if c in df.columns]
    vals = " ".join(f"{c}={row[c]}" for c in cols)
    ts = row["timestamp"]
    ts = ts.isoformat() if hasattr(ts, "isoformat") else ts
    return f"row {i}: {row['symbol']} {ts} {vals}".strip()


def validate_stage(params, paths) -> dict:
    """Validate the collected candles; write ``reports/validation.json``; DataError if any error.

    The report records the content hash of what was validated, so the features stage can
    refuse data that changed since (bad data never reaches features).
    """
    import json

    from qt.collect import read_lake
    from qt.lake import content_sha256

    candles = read_lake(params, paths)
    report = validate_candles(candles, params.data.timeframe, params.validation)
    out = report.to_dict() | {"data_sha256": content_sha256(candles)}
    paths.reports.mkdir(parents=True, exist_ok=True)
    (paths.reports / "validation.json").write_text(json.dumps(out, indent=2, default=str))
    summary = {"validation": {"suite": report.suite, "success": report.success,
                              "failed_expectations": [f.to_dict() for f in report.failed_expectations]}}
    if not report.success:
        from qt.errors import DataError

        raise DataError(report.describe() + f"\n(full report: {paths.reports / 'validation.json'}; "
                        "fix or re-collect the data before features are built)")
    return summary


def require_validated(candles: pd.DataFrame, paths) -> None:
    """Raise DataError unless ``candles`` are exactly what the last successful validation saw."""
    import json

    from qt.errors import DataError
    from qt.lake import content_sha256

    path = paths.reports / "validation.json"
    if not path.is_file():
        raise DataError("the candles have not been validated; run `qt validate` first")
    report = json.loads(path.read_text())
    if not report.get("success"):
        raise DataError(f"the last validation failed (see {path}); fix the data and run `qt validate`")
    if report.get("data_sha256") != content_sha256(candles):
        raise DataError("the candles changed since they were validated; run `qt validate` again")
