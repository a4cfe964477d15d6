"""One snapshot of everything the page shows, gathered from the real stores.

Each part is read on its own: a missing part (no state DB, Redis down, no champion, no
candles in the lake) becomes a one-line ``missing`` note for its panel and never stops the
others. The champion (MLflow) changes rarely and costs the most to read, so it is cached
for ``champion_ttl_s``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd

from dashboard import calc
from dashboard.health import Health, read_health
from dashboard.lake_reader import LakeMissing, read_symbol_candles
from dashboard.registry_reader import ChampionView, read_champion, read_drift
from dashboard.state_reader import RunView, StateMissing, read_run
from qt.config import Params
from qt.errors import QTError
from qt.paths import StatePaths

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    health: Health
    run: RunView | None
    symbol: str | None
    candles: pd.DataFrame  # the chosen symbol's candles over the run span
    buy_and_hold: pd.Series  # equity of buy-and-hold over the run's bars
    drawdown: pd.Series
    positions: pd.DataFrame  # open positions with mark_price and unrealised_pnl_usdt
    champion: ChampionView
    drift: dict
    missing: dict[str, str] = field(default_factory=dict)  # panel -> why it has no data


def default_symbol(run: RunView) -> str | None:
    """The symbol shown first: the most traded one (most fills), else the first of the run."""
    if not run.fills.empty:
        counts = run.fills["symbol"].value_counts()
        return str(sorted(counts.index, key=lambda s: (-counts[s], s))[0])
    return run.symbols[0] if run.symbols else None


class Sources:
    """Where the dashboard reads: the state directory, the params, Redis and the service URL."""

    def __init__(self, params: Params, paths: StatePaths, redis_url: str | None, service_url: str,
                 champion_ttl_s: float = 30.0):
        self.params = params
        self.paths = paths
        self.redis_url = redis_url
        self.service_url = service_url
        self.champion_ttl_s = champion_ttl_s
        self._champion: tuple[float, ChampionView] | None = None

    def champion(self) -> ChampionView:
        now = time.monotonic()
        if self._champion is None or now - self._champion[0] > self.champion_ttl_s:
            try:
                uri = self.paths.tracking_uri  # an MLflow server (QT_MLFLOW_URI) has no local file to look for
                view = read_champion(uri, self.params.train.model_name,
                                     self.paths.mlflow_db if uri.startswith("sqlite:") else None)
            except Exception as exc:  # noqa: BLE001 - a broken registry must not take the page down
                log.warning("champion unreadable: %s", exc)
                view = ChampionView(self.params.train.model_name, None, note=f"registry unreadable: {exc}"[:160])
            self._champion = (now, view)
        return self._champion[1]

    def snapshot(self, symbol: str | None = None, run_id: str | None = None) -> Snapshot:
        missing: dict[str, str] = {}
        health = read_health(self.redis_url, self.service_url)
        try:
            run = read_run(self.paths.executor_db, run_id)
        except StateMissing as exc:
            run, missing["executor"] = None, str(exc)
        empty = pd.DataFrame(columns=["symbol", "timestamp", "open", "high", "low", "close", "volume"])
        candles, bh, dd = empty, pd.Series(dtype=float), pd.Series(dtype=float)
        positions = pd.DataFrame()
        if run is not None:
            symbol = symbol if symbol in run.symbols else default_symbol(run)
            start_equity = self.params.risk.starting_equity_usdt
            dd = calc.drawdown(run.equity.set_index("ts")["equity_usdt"], start_equity)
            closes: dict[str, float] = {}
            if run.symbols and not run.equity.empty:
                first, last_ts = run.equity["ts"].iloc[0], run.equity["ts"].iloc[-1]
                try:  # the selected symbol on its own: another symbol's missing candles never blank it
                    candles = read_symbol_candles(self.params, self.paths, symbol, first, last_ts)
                except (LakeMissing, QTError, OSError) as exc:
                    missing["candles"] = str(exc) if isinstance(exc, LakeMissing) else \
                        f"candles of {symbol} unreadable ({type(exc).__name__})"
                try:
                    all_candles = pd.concat([read_symbol_candles(self.params, self.paths, s, first, last_ts)
                                             for s in run.symbols], ignore_index=True)
                    bh = calc.buy_and_hold(all_candles, run.equity["ts"], start_equity)
                    last = all_candles.sort_values("timestamp").groupby("symbol").tail(1)
                    closes = dict(zip(last["symbol"], last["close"].astype(float)))
                except (LakeMissing, QTError, OSError) as exc:
                    log.info("buy-and-hold and marks unavailable: %s", exc)
            positions = calc.unrealised_pnl(run.positions, closes)
        return Snapshot(health=health, run=run, symbol=symbol, candles=candles, buy_and_hold=bh, drawdown=dd,
                        positions=positions, champion=self.champion(), drift=read_drift(self.paths.reports),
                        missing=missing)
