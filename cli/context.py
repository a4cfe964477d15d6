"""What every ``qt`` sub-command does first: load params.yaml with the command line's overrides,
check them, and prepare the state directory - one function, so the commands cannot drift apart."""

from __future__ import annotations

import os
from pathlib import Path

from data.sources import parse_source
from qt.config import load_params
from qt.errors import UserError
from qt.paths import StatePaths, default_params_path
from qt.timeframes import utc_timestamp


def load_context(params_path, source, symbols, timeframe, start, end, exchange_url=None, exchange=None):
    """Load params with CLI overrides and prepare the state directory and tool environment."""
    data: dict = {}
    overrides: dict = {}
    if exchange_url is not None:
        if not exchange_url.startswith(("http://", "https://")):
            raise UserError(f"--exchange-url {exchange_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8900")
        overrides["collect"] = {"exchange_url": exchange_url.rstrip("/")}
    if exchange is not None:
        overrides.setdefault("collect", {})["exchange"] = exchange
    if source is not None:
        data["source"] = source
    if symbols is not None:
        syms = [s.strip() for s in symbols.split(",") if s.strip()]
        if not syms:
            raise UserError("--symbols is empty; pass e.g. --symbols BTC/USDT,ETH/USDT")
        data["symbols"] = syms
    if timeframe is not None:
        data["timeframe"] = timeframe
    if start is not None:
        data["start"] = start
    if end is not None:
        data["end"] = end
    path = params_path or default_params_path()
    if data:
        overrides["data"] = data
    params = load_params(path, overrides or None)
    check_dates(params)
    parse_source(params.data.source)  # fail on a bad --source before anything runs
    paths = StatePaths.from_env().ensure()
    os.environ.update(paths.tool_env())
    if path is not None:
        os.environ["QT_PARAMS"] = str(Path(path).resolve())
    return params, paths


def check_dates(params) -> None:
    lo, hi = utc_timestamp(params.data.start), utc_timestamp(params.data.end)
    if lo is not None and hi is not None and lo >= hi:
        raise UserError(f"--start {params.data.start} is not before --end {params.data.end}")


def params_with_alt_series(params, alt: str):
    """``params`` with ``alt.series`` = the comma-separated ``--alt`` list (validated: UserError on an
    unknown series, one line)."""
    from qt.config import AltParams

    series = [s.strip() for s in alt.split(",") if s.strip()]
    try:
        checked = AltParams(**(params.alt.model_dump() | {"series": series}))
    except ValueError:
        raise UserError(f"--alt {alt!r}: series are fear_greed, onchain_btc, headlines (comma-separated)") from None
    return params.model_copy(update={"alt": checked})
