"""Which lake holds the candles of the run the dashboard shows.

The executor's state says which symbols were traded, not where their candles live. The lake's folder
is keyed by the source *and*, for a synthetic market, by the universe it was generated for
(``data.sources.source_key``), so the params ``qt dashboard`` was started with (often the defaults, not
the run's ``--symbols``) can name a folder that does not exist. The run's own records name the right
one: ``reports/collect.json`` (written by the collect stage: ``lake`` and ``timeframe``), then the run's
``params.effective.yaml``; the dashboard's params come last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qt.config import Params
from qt.paths import StatePaths


class LakeMissing(Exception):
    """No candles for the symbol; the message is short enough for the panel."""


@dataclass(frozen=True)
class RunLake:
    root: Path
    timeframe: str


def _recorded_lake(paths: StatePaths) -> RunLake | None:
    record = paths.reports / "collect.json"
    try:
        data = json.loads(record.read_text())["data"]
        return RunLake(Path(data["lake"]), str(data["timeframe"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _effective_params_lake(paths: StatePaths) -> RunLake | None:
    from data.sources import lake_root
    from qt.config import load_params

    effective = paths.home / "params.effective.yaml"
    if not effective.is_file():
        return None
    try:
        p = load_params(effective)
        return RunLake(lake_root(p, paths), p.data.timeframe)
    except Exception:  # noqa: BLE001 - an unreadable record is only one candidate less
        return None


def find_run_lake(params: Params, paths: StatePaths, symbol: str) -> RunLake:
    """The first candidate lake (run record, run params, dashboard params) holding ``symbol``'s candles."""
    from data import lake
    from data.sources import lake_root

    own = params.model_copy(update={"data": params.data.model_copy(update={"symbols": [symbol]})})
    candidates = [_recorded_lake(paths), _effective_params_lake(paths),
                  RunLake(lake_root(params, paths), params.data.timeframe),
                  RunLake(lake_root(own, paths), params.data.timeframe)]  # a universe holding the symbol
    for cand in candidates:
        if cand is not None and symbol in lake.available_symbols(cand.root, cand.timeframe):
            return cand
    known = [c for c in candidates if c is not None]
    # an existing folder without the symbol, else the run's own (recorded) lake: the one to restore
    shown = next((c for c in known if c.root.is_dir()), known[0])
    raise LakeMissing(f"no candles for {symbol} in this run's lake ({shown.root.name}); "
                      f"collect them with `qt collect`")


def read_symbol_candles(params: Params, paths: StatePaths, symbol: str, start: pd.Timestamp,
                        end: pd.Timestamp) -> pd.DataFrame:
    """``symbol``'s candles with open times in [start, end] from the run's lake; ``LakeMissing`` if none."""
    from data import lake

    from qt.errors import DataError

    found = find_run_lake(params, paths, symbol)
    try:
        return lake.read_candles(found.root, [symbol], found.timeframe, start, end + pd.Timedelta(milliseconds=1))
    except DataError:
        raise LakeMissing(f"no candles for {symbol} in this run's lake ({found.root.name}) "
                          f"over the run's bars") from None
