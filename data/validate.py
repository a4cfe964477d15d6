"""Great Expectations suites for candles and funding; bad data stops here.

The candle suite runs on the tidy frame plus derived, per-symbol columns:

* ``step_ms`` - time since the previous candle (<= 0: duplicated or out of order; above
  the bar size: an exchange gap);
* ``off_grid_ms`` - distance of the open time from the timeframe grid;
* ``spike_log`` - size of a bar that jumps away from both neighbours and straight back
  with a price gap at its open: a bad print, not a market move;
* ``sigma_move`` - |log return| in units of the symbol's trailing volatility (the bar
  itself excluded): a return outlier;
* ``stale_bars`` - on a symbol's last candle only, how many whole bars it is older than
  ``now`` (freshness; only when a ``now`` is given and a limit is set).

Severity ``critical`` is an error: the symbol's batch is quarantined and never reaches
features. ``warning`` (exchange gaps, return outliers) is reported and passes. Every
failure is split per symbol and names example rows.

Per symbol (``validate_symbol``): every derived column and every
expectation is computed within one symbol, and example rows are numbered within the symbol's
own candles, so a symbol validated alone gets exactly the result it gets in a frame of many.
That lets the validate stage map one task per batch of symbols (``validate_lake_batch``, on
threads or a Dask cluster) and merge the reports (``merge_reports``), or - without a fan-out -
validate every symbol in one run and split the result (``validate_symbols``): the same record
either way. One Great Expectations run costs ~0.2-0.3 s whatever its size, so runs are few.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data.lake import content_sha256, read_candles, read_funding
from qt.config import ValidationParams
from qt.errors import DataError
from qt.timeframes import timeframe_ms

CANDLE_SUITE = "candles"
FUNDING_SUITE = "funding"
_PRICE_COLUMNS = ["open", "high", "low", "close"]
_MAX_EXAMPLES = 5
# One Great Expectations run at a time per process: its ephemeral contexts share module-level
# registries, and the run is GIL-bound pandas work, so threads would gain nothing anyway.
_GX_LOCK = threading.Lock()
_VALIDATIONS: dict[tuple, object] = {}  # (suite, its parameters) -> GX validation definition
_MAX_CACHED = 8


@dataclass(frozen=True)
class FailedExpectation:
    symbol: str
    expectation: str
    column: str
    severity: str  # "critical" (error) or "warning"
    count: int
    examples: list[str]  # "row 17: BTC/USDT 2024-01-01T05:00:00+00:00 high=1.0 low=2.0"

    @property
    def is_error(self) -> bool:
        return self.severity == "critical"

    def to_dict(self) -> dict:
        return {"symbol": self.symbol, "expectation": self.expectation, "column": self.column,
                "severity": self.severity, "count": self.count, "examples": self.examples}


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    rows_by_symbol: dict[str, int]
    failed_expectations: list[FailedExpectation] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_symbol.values())

    @property
    def errors(self) -> list[FailedExpectation]:
        return [f for f in self.failed_expectations if f.is_error]

    @property
    def warnings(self) -> list[FailedExpectation]:
        return [f for f in self.failed_expectations if not f.is_error]

    @property
    def quarantined(self) -> list[str]:
        """Symbols with at least one error, in input order."""
        bad = {f.symbol for f in self.errors}
        return [s for s in self.rows_by_symbol if s in bad]

    @property
    def passed(self) -> list[str]:
        bad = set(self.quarantined)
        return [s for s in self.rows_by_symbol if s not in bad]

    @property
    def success(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"suite": self.suite, "success": self.success, "rows": self.rows,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "passed_symbols": self.passed, "quarantined_symbols": self.quarantined,
                "failed_expectations": [f.to_dict() for f in self.failed_expectations]}

    def describe(self) -> str:
        """Human-readable: one line per failed expectation and symbol, with its first row."""
        head = (f"{self.suite} validation {'passed' if self.success else 'FAILED'}: {self.rows} rows, "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        if self.quarantined:
            head += f"; quarantined: {', '.join(self.quarantined)}"
        lines = [head]
        for f in self.failed_expectations:
            kind = "ERROR" if f.is_error else "warning"
            eg = f", e.g. {f.examples[0]}" if f.examples else ""
            lines.append(f"  {kind} {f.symbol}: {f.expectation} on {f.column}: {f.count} row(s){eg}")
        return "\n".join(lines)


def derive_checks(candles: pd.DataFrame, timeframe: str, params: ValidationParams,
                  now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The frame the candle suite runs on: input order kept (out-of-order rows show up)."""
    df = candles.reset_index(drop=True).copy()
    step = timeframe_ms(timeframe)
    ts_ms = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ms, UTC]").astype("int64")
    by_symbol = df.groupby("symbol", sort=False)
    df["step_ms"] = (ts_ms - ts_ms.groupby(df["symbol"], sort=False).shift(1)).fillna(step).astype("float64")
    df["off_grid_ms"] = (ts_ms % step).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        prev_close = by_symbol["close"].shift(1)
        logret = np.log(df["close"] / prev_close)
        gap = np.log(df["open"] / prev_close).abs()
    df["logret"] = logret.where(np.isfinite(logret), np.nan).fillna(0.0)
    df["open_gap_log"] = gap.where(np.isfinite(gap), 0.0).fillna(0.0)
    nxt = df.groupby("symbol", sort=False)["logret"].shift(-1).fillna(0.0)
    nxt_gap = df.groupby("symbol", sort=False)["open_gap_log"].shift(-1).fillna(0.0)
    reverts = np.sign(df["logret"]) * np.sign(nxt) < 0
    size = np.minimum(df["logret"].abs(), nxt.abs())
    disconnected = np.maximum(df["open_gap_log"], nxt_gap) > 0.5 * size
    df["spike_log"] = np.where(reverts & disconnected, size, 0.0)
    trailing_sigma = df.groupby("symbol", sort=False)["logret"].transform(
        lambda r: r.rolling(params.outlier_window_bars, min_periods=params.outlier_window_bars // 2)
        .std().shift(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        df["sigma_move"] = (df["logret"].abs() / trailing_sigma).replace([np.inf], np.nan).fillna(0.0)
    df["stale_bars"] = 0.0
    df["row_in_symbol"] = df.groupby("symbol", sort=False).cumcount()  # examples name rows per symbol
    if now is not None:
        last = ts_ms.groupby(df["symbol"], sort=False).transform("max")
        now_ms = int(pd.Timestamp(now).tz_convert("UTC").value // 10**6)
        is_last = ts_ms == last
        # whole bars between the last candle's close and now
        df.loc[is_last, "stale_bars"] = np.floor((now_ms - (ts_ms[is_last] + step)) / step).clip(lower=0)
    return df


def _candle_suite(gx, gxe, params: ValidationParams, timeframe: str, check_freshness: bool):
    suite = gx.ExpectationSuite(name=CANDLE_SUITE)
    add = suite.add_expectation
    add(gxe.ExpectTableColumnsToMatchSet(column_set=["symbol", "timestamp", *_PRICE_COLUMNS, "volume"],
                                         exact_match=False))
    for col in [*_PRICE_COLUMNS, "volume"]:
        add(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=["float64", "float32", "Float64"]))
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
    add(gxe.ExpectColumnValuesToBeBetween(column="off_grid_ms", min_value=0, max_value=0))
    add(gxe.ExpectColumnValuesToBeBetween(column="spike_log", max_value=params.max_spike_log_return))
    add(gxe.ExpectColumnValuesToBeBetween(column="step_ms", max_value=timeframe_ms(timeframe),
                                          severity="warning" if params.allow_gaps else "critical"))
    add(gxe.ExpectColumnValuesToBeBetween(column="sigma_move", max_value=params.outlier_sigma,
                                          severity="warning"))
    if check_freshness:
        add(gxe.ExpectColumnValuesToBeBetween(column="stale_bars", max_value=params.max_staleness_bars))
    return suite


def _funding_suite(gx, gxe, params: ValidationParams):
    suite = gx.ExpectationSuite(name=FUNDING_SUITE)
    add = suite.add_expectation
    add(gxe.ExpectTableColumnsToMatchSet(column_set=["symbol", "timestamp", "funding_rate"], exact_match=False))
    add(gxe.ExpectColumnValuesToNotBeNull(column="timestamp"))
    add(gxe.ExpectColumnValuesToNotBeNull(column="funding_rate"))
    add(gxe.ExpectColumnValuesToBeInTypeList(column="funding_rate", type_list=["float64", "float32", "Float64"]))
    add(gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "timestamp"]))
    add(gxe.ExpectColumnValuesToBeBetween(column="step_ms", min_value=0, strict_min=True))
    add(gxe.ExpectColumnValuesToBeBetween(column="funding_rate", min_value=-params.max_abs_funding_rate,
                                          max_value=params.max_abs_funding_rate))
    return suite


def validate_candles(candles: pd.DataFrame, timeframe: str, params: ValidationParams,
                     now: pd.Timestamp | None = None) -> ValidationReport:
    """Run the candle suite; freshness is checked only when ``now`` and a limit are given."""
    check_freshness = now is not None and params.max_staleness_bars is not None
    checked = derive_checks(candles, timeframe, params, now if check_freshness else None)
    return _run(checked, (CANDLE_SUITE, params, timeframe, check_freshness),
                lambda gx, gxe: _candle_suite(gx, gxe, params, timeframe, check_freshness))


def validate_funding(funding: pd.DataFrame, params: ValidationParams) -> ValidationReport:
    """Run the funding suite on ``symbol, timestamp, funding_rate`` rows."""
    df = funding.reset_index(drop=True).copy()
    ts_ms = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ms, UTC]").astype("int64")
    df["step_ms"] = (ts_ms - ts_ms.groupby(df["symbol"], sort=False).shift(1)).fillna(1).astype("float64")
    df["row_in_symbol"] = df.groupby("symbol", sort=False).cumcount()
    return _run(df, (FUNDING_SUITE, params), lambda gx, gxe: _funding_suite(gx, gxe, params))


@dataclass(frozen=True)
class SymbolValidation:
    """One symbol's validation: its candle report, its funding report (perpetuals with funding
    stored; else None) and the content hash of the candles validated (what features must see)."""

    symbol: str
    candles: ValidationReport
    funding: ValidationReport | None
    data_sha256: str

    @property
    def quarantined(self) -> bool:
        return bool(self.candles.errors or (self.funding is not None and self.funding.errors))


def validate_symbol(symbol: str, candles: pd.DataFrame, funding: pd.DataFrame | None, timeframe: str,
                    params: ValidationParams, now: pd.Timestamp | None = None) -> SymbolValidation:
    """Both suites on one symbol's candles (and funding events, when any). A table-level failure
    (missing column, wrong type) is charged to this symbol, so it quarantines it."""
    report = _charged_to(symbol, validate_candles(candles, timeframe, params, now=now))
    funding_report = None
    if funding is not None and not funding.empty:
        funding_report = _charged_to(symbol, validate_funding(funding, params))
    return SymbolValidation(symbol, report, funding_report, content_sha256(candles.reset_index(drop=True)))


def validate_symbols(candles: pd.DataFrame, funding: pd.DataFrame | None, timeframe: str,
                     params: ValidationParams, now: pd.Timestamp | None = None) -> list[SymbolValidation]:
    """``validate_symbol`` for every symbol of ``candles`` (in the frame's order) from ONE run of
    each suite over all of them, split per symbol; a table-level failure is charged to each."""
    report = validate_candles(candles, timeframe, params, now=now)
    funding_report = validate_funding(funding, params) if funding is not None and not funding.empty else None
    out = []
    for sym, rows in report.rows_by_symbol.items():
        one = candles[candles["symbol"] == sym].reset_index(drop=True)
        sym_funding = None
        if funding_report is not None and sym in funding_report.rows_by_symbol:
            sym_funding = _only(sym, funding_report)
        out.append(SymbolValidation(sym, _only(sym, report), sym_funding, content_sha256(one)))
    return out


def validate_lake_symbols(symbols: list[str], *, root: str, timeframe: str, start: str | None, end: str | None,
                          params: ValidationParams, now: pd.Timestamp | None = None) -> list[SymbolValidation]:
    """``validate_symbols`` on the lake at ``root``: each symbol's candles in ``[start, end)`` and
    (perpetuals) its whole funding history. DataError when the lake has no candles for them."""
    candles = read_candles(Path(root), symbols, timeframe, start, end)
    fundings = [f for f in (_lake_funding(root, s) for s in symbols) if f is not None and not f.empty]
    return validate_symbols(candles, pd.concat(fundings, ignore_index=True) if fundings else None, timeframe,
                            params, now)


def validate_lake_batch(label: str, *, members: dict[str, list[str]], root: str, timeframe: str,
                        start: str | None, end: str | None, params: ValidationParams,
                        now: pd.Timestamp | None = None) -> list[SymbolValidation]:
    """``validate_lake_symbols`` on the batch ``members[label]``: the unit of work one task runs
    (``qt.fanout`` maps it over batch labels; reads its own input from the lake)."""
    return validate_lake_symbols(members[label], root=root, timeframe=timeframe, start=start, end=end,
                                 params=params, now=now)


def _lake_funding(root: str, symbol: str) -> pd.DataFrame | None:
    """A perpetual's stored funding events (None for spot or when none were collected)."""
    if ":" not in symbol:
        return None
    try:
        return read_funding(Path(root), symbol).assign(symbol=symbol)
    except DataError:
        return None  # no funding stored for it (not collected): nothing to validate


def _only(symbol: str, report: ValidationReport) -> ValidationReport:
    """The part of a several-symbol report about ``symbol`` (table-level failures included)."""
    failed = [f for f in report.failed_expectations if f.symbol in (symbol, "*")]
    return _charged_to(symbol, ValidationReport(report.suite, {symbol: report.rows_by_symbol[symbol]}, failed))


def merge_reports(suite: str, reports: list[ValidationReport]) -> ValidationReport:
    """One report of several symbols' reports: rows in the order given, failures sorted as
    ``_run`` sorts them (errors first, then by symbol, expectation, column)."""
    rows: dict[str, int] = {}
    failed: list[FailedExpectation] = []
    for rep in reports:
        rows.update(rep.rows_by_symbol)
        failed.extend(rep.failed_expectations)
    failed.sort(key=lambda f: (not f.is_error, f.symbol, f.expectation, f.column))
    return ValidationReport(suite, rows, failed)


def _charged_to(symbol: str, report: ValidationReport) -> ValidationReport:
    failed = [f if f.symbol != "*" else FailedExpectation(symbol, f.expectation, f.column, f.severity, f.count,
                                                          f.examples)
              for f in report.failed_expectations]
    failed.sort(key=lambda f: (not f.is_error, f.symbol, f.expectation, f.column))
    return ValidationReport(report.suite, report.rows_by_symbol or {symbol: 0}, failed)


def run_suite(checked: pd.DataFrame, key: tuple, build_suite) -> ValidationReport:
    """Run the suite ``build_suite(gx, gxe)`` (cached under ``key``, ``key[0]`` its name) on the frame
    ``checked`` (a ``symbol`` column says whom each failure concerns): other suites (``data.validate_alt``)."""
    return _run(checked, key, build_suite)


def _run(checked: pd.DataFrame, key: tuple, build_suite) -> ValidationReport:
    with _GX_LOCK:
        vd = _VALIDATIONS.get(key)
        if vd is None:
            if len(_VALIDATIONS) >= _MAX_CACHED:
                _VALIDATIONS.pop(next(iter(_VALIDATIONS)))
            vd = _VALIDATIONS[key] = _validation_definition(build_suite)
        result = vd.run(batch_parameters={"dataframe": checked}, result_format={"result_format": "COMPLETE"})
    rows_by_symbol = {str(s): int(n) for s, n in checked.groupby("symbol", sort=False).size().items()}
    failed: list[FailedExpectation] = []
    for r in result.results:
        if r.success:
            continue
        failed.extend(_split_by_symbol(checked, r))
    failed.sort(key=lambda f: (not f.is_error, f.symbol, f.expectation, f.column))
    return ValidationReport(key[0], rows_by_symbol, failed)


def _validation_definition(build_suite):
    """A suite bound to a whole-dataframe batch in an ephemeral context. Building one costs ~0.5 s
    (more than validating 6000 candles), so ``_run`` keeps them per suite and parameters and only
    hands each call's frame in as the batch: a per-symbol stage pays it once per process."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # imported here, not at the top: GX reads GX_ANALYTICS_ENABLED at import time, and it is a heavy import
    import great_expectations as gx
    from great_expectations import expectations as gxe

    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - progress bars are cosmetic
        pass
    suite = ctx.suites.add(build_suite(gx, gxe))
    asset = ctx.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
    batch = asset.add_batch_definition_whole_dataframe("all")
    return ctx.validation_definitions.add(gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))


def _split_by_symbol(df: pd.DataFrame, r) -> list[FailedExpectation]:
    cfg = r.expectation_config
    kw = cfg.kwargs
    column = kw.get("column") or ",".join(
        str(x) for x in (kw.get("column_A"), kw.get("column_B")) if x) or ",".join(kw.get("column_list", []))
    severity = getattr(cfg.severity, "value", str(cfg.severity)).lower()
    idx = list(r.result.get("unexpected_index_list") or [])
    if not idx:  # table-level expectations (columns, types) concern every symbol
        detail = str(r.result.get("details", {}).get("mismatched") or r.result.get("observed_value") or "")
        return [FailedExpectation("*", cfg.type, column, severity, 1, [detail] if detail else [])]
    by_symbol: dict[str, list] = {}
    for i in idx:
        sym = i.get("symbol") if isinstance(i, dict) else df.at[i, "symbol"]
        by_symbol.setdefault(str(sym), []).append(i)
    return [FailedExpectation(sym, cfg.type, column, severity, len(rows),
                              [_describe_row(df, i, column) for i in rows[:_MAX_EXAMPLES]])
            for sym, rows in by_symbol.items()]


def _describe_row(df: pd.DataFrame, i, column: str) -> str:
    if isinstance(i, dict):  # compound-uniqueness results come as dicts of the key columns
        return " ".join(f"{k}={v}" for k, v in i.items())
    row = df.loc[i]
    cols = [c for c in column.split(",") if c in df.columns]
    vals = " ".join(f"{c}={row[c]}" for c in cols)
    ts = row["timestamp"]
    ts = ts.isoformat() if hasattr(ts, "isoformat") else ts
    n = row["row_in_symbol"] if "row_in_symbol" in df.columns else i  # the row within its symbol's candles
    return f"row {n}: {row['symbol']} {ts} {vals}".strip()
