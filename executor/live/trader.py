"""The live (and testnet) trading loop: the backtest's loop, clocked by the exchange, orders through ccxt.

``LiveTrader`` builds the SAME ``TradingLoop`` (decision core + RiskEngine) the backtest and the
paper daemon use; only the broker (``CcxtBroker``) and the clock change:

* the clock is the exchange's (``fetch_time``): a bar is stepped once it has closed on the
  exchange (its open + one bar <= exchange now). If the daemon was away for several bars (a
  slow poll, a restart) every missed bar is still accounted for, oldest first
  (``TradingLoop.step(missed=True)``): the broker's fills and protective triggers are collected, positions
  are marked and aged (``bars_held``: a max-holding exit is decided at the bar it falls due,
  not late), an equity point is recorded and max-holding exits are sent; funding stays with
  the exchange's wallet, as on every live bar (below).
  New entries are decided only on the newest bar: opening on an old bar's signal would trade
  on stale information (the risk engine's stale-signal rule), so the service is not even asked
  for the missed bars;
* candles of the universe come from the exchange (``fetch_ohlcv``), signals from the serving
  service (``HttpSignalSource``); the loop decides at the close of bar t and the broker sends
  at once - the exchange is then at the open of t+1, where the paper broker fills;
* before the first bar, ``reconcile`` makes journal, exchange and ledger agree and protects
  every open position;
* the last stepped bar is stored (``live_progress``) in the same transaction as the bar's
  record: a crash mid-bar re-steps that bar, and the deterministic client order ids make the
  re-step send nothing twice;
* no signal, service down or stale signal: nothing opens (the RiskEngine refuses), exits and
  protectives keep being managed, and a ``risk.alert`` is raised; Redis down: trading goes on
  from SQLite, events are counted as lost, the publisher reconnects by itself.

Perpetual funding is settled by the exchange into the wallet, not by the loop's schedule. The
RiskEngine's FUNDING_FILTER (``risk.max_entry_funding_rate``) still needs the settled rates: the
trader fetches the perpetuals' funding history through ccxt (``fetch_funding_rate_history``,
``GET /fapi/v1/fundingRate``) at start-up and again after each funding time (00/08/16 UTC) and
gives it to ``RiskEngine.funding`` as a ``FundingSchedule``; without it every entry would be
refused, never silently allowed. At start-up it also sets and reads back each perpetual's leverage
(``risk.leverage_of``) and margin mode, and reads the exchange's maintenance-margin brackets
(``fetch_leverage_tiers``) into ``RiskEngine.brackets`` for the liquidation check.

Perpetuals trade on Binance (ccxt ``binanceusdm``) or Bybit (ccxt ``bybit``) with the same broker;
the venue's differences live in ``executor.live.venue`` (on Bybit: no native trailing stop - refused
at start-up -, no liquidation or bracket reads, the margin mode only read back). Each run records its
venue in ``live_runs`` (the dashboard shows it).

Spot (``BASE/USDT`` through ccxt ``binance``) uses ``SpotBroker`` and ``reconcile_spot``
(``executor.live.spot``): the guard is one OCO order list instead of two reduce-only orders.
One executor trades one market: a universe mixing spot and perpetuals is refused.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ccxt
import pandas as pd

from executor.live.broker import CcxtBroker, RetryPolicy
from executor.live.journal import OrderJournal
from executor.live.venue import venue_of
from executor.live.spot import SpotBroker, reconcile_spot
from executor.core import NO_SIGNAL, Decision
from executor.events import EventPublisher, EventRecorder
from executor.funding import is_perp
from executor.loop import LoopListener, TradingLoop
from executor.metrics import start_metrics
from executor.portfolio import Bar, Fill
from executor.live.reconcile import ReconcileReport, reconcile
from executor.live.leverage import LEVERAGE_UNVERIFIED, set_and_verify_leverage, venue_brackets, venue_funding
from qt.fills import EMERGENCY_EXIT
from executor.risk import STALE_SIGNAL, RiskAlert
from executor.state import StateStore
from qt.config import Params
from qt.errors import UserError
from qt.notify import NotifyingListener, start_notifier
from qt.timeframes import timeframe_ms

log = logging.getLogger(__name__)

FUNDING_EVERY_MS = 8 * 3_600_000  # Binance settles USDT-M funding at 00, 08 and 16 UTC
_PROGRESS = "CREATE TABLE IF NOT EXISTS live_progress (namespace TEXT PRIMARY KEY, last_bar_ts TEXT NOT NULL)"
# one row per run: where it trades (the dashboard shows the venue of the run it displays)
_RUNS = ("CREATE TABLE IF NOT EXISTS live_runs (run_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, venue TEXT NOT NULL, "
         "market TEXT NOT NULL, started_ts TEXT NOT NULL)")


class _SignalWatch(LoopListener):
    """Notes why entries were refused for want of a usable signal, for one alert per bar."""

    def __init__(self) -> None:
        self.reasons: dict[str, list[str]] = {}
        self.source_down = False

    def on_decision(self, d: Decision) -> None:
        if d.outcome == "denied" and d.reason in (NO_SIGNAL, STALE_SIGNAL):
            self.reasons.setdefault(d.reason, []).append(d.symbol)

    def on_signal_unavailable(self, ts, error) -> None:
        self.source_down = True

    def reset(self) -> None:
        self.reasons, self.source_down = {}, False


def live_market(symbols: Sequence[str]) -> str:
    """``"perp"`` (all ``BASE/USDT:USDT``, ccxt ``binanceusdm``) or ``"spot"`` (all ``BASE/USDT``,
    ccxt ``binance``); a mixed universe is refused: one executor trades one account type (one
    ccxt client, one wallet, one reconciliation), run one executor id per market instead."""
    spot = [s for s in symbols if not is_perp(s)]
    perp = [s for s in symbols if is_perp(s)]
    if spot and perp:
        raise UserError(f"live/testnet trading takes spot or USDT-M perpetual symbols, not both: {', '.join(spot)} "
                        f"are spot, {', '.join(perp)} perpetuals; run one executor per market (--executor-id)")
    return "spot" if spot else "perp"


def check_live_universe(symbols: Sequence[str], exchange: ccxt.Exchange | None = None,
                        risk=None) -> str:
    """The universe's market (``live_market``), checked against the ccxt client and the risk
    settings spot supports; a mismatch is a one-line UserError."""
    market = live_market(symbols)
    if exchange is not None:
        client = getattr(exchange, "id", "")
        if market == "spot" and client != "binance":
            raise UserError(f"{', '.join(symbols)} are spot but the exchange client is {client} (USDT-M perpetuals); "
                            f"spot trades through ccxt binance, perpetuals need BASE/USDT:USDT symbols")
        if market == "perp" and client == "binance":
            raise UserError(f"{', '.join(symbols)} are USDT-M perpetuals but the exchange client is binance (spot); "
                            f"use binanceusdm")
    if market == "perp" and exchange is not None and risk is not None:
        venue = venue_of(exchange)
        if getattr(risk, "trailing_stop_pct", 0.0) > 0 and getattr(risk, "trailing_mode", "native") == "native" \
                and not venue.native_trailing:
            raise UserError(f"risk.trailing_mode: native is not supported on {venue.name} (no trailing stop order "
                            f"there; its position trailing stop is not served by the local exchange); use "
                            f"risk.trailing_mode: managed")
    if market == "spot" and risk is not None:
        if getattr(risk, "trailing_stop_pct", 0.0) > 0 and getattr(risk, "trailing_mode", "native") != "managed":
            raise UserError("risk.trailing_mode: native is not supported for spot live trading (the local exchange "
                            "does not simulate Binance spot's trailingDelta); use trailing_mode: managed")
    return market


class LiveTrader:
    """One executor on one account: ``start()`` (reconcile), then ``poll()`` per exchange bar.

    ``namespace`` names the client order ids and the journal: keep it across restarts (a new
    one would not recognise its own orders). Each perpetual is traded at ``risk.leverage_of(symbol)``
    (set and verified on the exchange, ``executor.live.leverage``)."""

    def __init__(self, params: Params, exchange: ccxt.Exchange, source, state_db: Path, namespace: str,
                 redis_url: str | None = None, retry: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, secrets: tuple[str, ...] = (),
                 metrics_port: int | None = None, environ: Mapping[str, str] | None = None):
        self.market = check_live_universe(params.data.symbols, exchange, params.risk)
        self.params = params
        self.ex = exchange
        self.source = source
        self.namespace = namespace
        self.symbols = list(params.data.symbols)
        self.bar_ms = timeframe_ms(params.data.timeframe)
        self._secrets = secrets
        self.run_id = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        self.store = StateStore(Path(state_db), self.run_id)
        self.store.conn.execute(_PROGRESS)
        self.store.conn.execute(_RUNS)
        self.venue = str(getattr(exchange, "id", ""))  # the ccxt id: binance, binanceusdm, bybit
        self.store.conn.execute("INSERT OR REPLACE INTO live_runs VALUES (?, ?, ?, ?, ?)",
                                (self.run_id, namespace, self.venue, self.market,
                                 pd.Timestamp.now(tz="UTC").isoformat()))
        self.store.conn.commit()
        self.journal = OrderJournal(self.store.conn, namespace, self.run_id)
        self.publisher = EventPublisher(redis_url) if redis_url else None
        broker_cls = SpotBroker if self.market == "spot" else CcxtBroker
        self.broker = broker_cls(exchange, self.journal, namespace, self.bar_ms, retry=retry, sleep=sleep,
                                 secrets=secrets)
        self._watch = _SignalWatch()
        listeners = [self.store, self._watch] + ([EventRecorder(self.publisher)] if self.publisher else [])
        # metrics endpoint and notifications (``executor.metrics``, ``qt.notify``) when configured
        self.notifier = start_notifier(params, environ)
        if self.notifier:
            listeners.append(NotifyingListener(self.notifier))
        self.metrics, self.metrics_server = start_metrics(metrics_port)
        if self.metrics:
            listeners.append(self.metrics)
        # funding stays with the exchange's wallet: the loop books none
        self.loop = TradingLoop(params, source, self.broker, listeners=listeners,
                                kill_switch=self.publisher.is_killed if self.publisher else None, bar_ms=self.bar_ms,
                                exchange_settles_funding=True)
        self.reconciled: ReconcileReport | None = None
        self.bars_stepped = 0
        self._funding_until: int | None = None  # ms: the funding schedule is refreshed from this time on

    # ---- start-up ----------------------------------------------------------------------
    def start(self) -> ReconcileReport:
        """Markets, leverage and reconciliation; nothing is traded before this returns."""
        b = self.broker
        b.read(lambda: self.ex.load_markets())
        unverified: list[tuple[str, str]] = []
        for sym in self.symbols:
            if sym not in self.ex.markets:
                raise UserError(f"{sym} is not listed on the exchange; fix data.symbols")
            self.loop.risk.market_min_notional_usdt[sym] = b.min_notional_usdt(sym)
            if self.market == "spot":
                continue  # no leverage on spot
            mismatch = self._verify_account_settings(sym)
            if mismatch is not None:  # this symbol is not traded; the others are
                unverified.append((sym, mismatch))
        if self.market != "spot":
            if b.venue.checks_position_mode:  # Bybit: one-way mode (positionIdx 0) or nothing
                refusal = b.venue.position_mode_refusal(b.read(lambda: self.ex.fetch_positions(self.symbols)))
                if refusal is not None:
                    raise UserError(refusal)
            self._read_brackets()
            self._refresh_funding()
        last = self._last_bar()
        now_bar = self._newest_closed_ms()
        # the first bar ``poll`` will step: the one after the last stepped (missed bars are all
        # stepped, each ages the positions by one), or the newest closed one on a first start
        next_bar = pd.Timestamp(now_bar if last is None else last.value // 1_000_000 + self.bar_ms,
                                unit="ms", tz="UTC")
        reconcile_fn = reconcile_spot if self.market == "spot" else reconcile
        portfolio, report = reconcile_fn(b, self.symbols, self.params.risk, next_bar, self.bar_ms)
        self.loop.adopt(portfolio, portfolio.equity_usdt())
        self._prime_volatility(next_bar)
        for fill in [*self._entry_fills_never_recorded(report.fills), *report.fills]:
            self.store.on_fill(fill, portfolio, None)  # into the record only: the ledger above reflects them
        self.reconciled = report
        self.loop.raise_alert(RiskAlert(next_bar, "RECONCILE", "reconciled with the exchange before trading",
                                        report.summary()))
        for sym, mismatch in unverified:
            self._alert_unverified(next_bar, sym, mismatch)
        if self.market != "spot":
            b.before_first_entry = self._verify_before_first_entry
        self.store.conn.commit()
        return report

    def _verify_account_settings(self, sym: str) -> str | None:
        """Set and read back leverage and margin mode (``executor.live.leverage``); on a mismatch the
        symbol is refused for entries for the rest of this run and the line is logged."""
        mismatch = set_and_verify_leverage(self.broker, sym, self.params.risk.leverage_of(sym), self._secrets,
                                           margin_mode=self.params.risk.margin_mode)
        if mismatch is not None:
            log.error("%s", mismatch)
            self.loop.risk.refused_symbols[sym] = (LEVERAGE_UNVERIFIED, mismatch)
        return mismatch

    def _verify_before_first_entry(self, sym: str) -> str | None:
        """Again right before a symbol's first entry: the setting may have changed since start-up."""
        mismatch = self._verify_account_settings(sym)
        if mismatch is not None:
            self._alert_unverified(pd.Timestamp(self._newest_closed_ms(), unit="ms", tz="UTC"), sym, mismatch)
        return mismatch

    def _alert_unverified(self, ts: pd.Timestamp, sym: str, mismatch: str) -> None:
        self.loop.raise_alert(RiskAlert(ts, LEVERAGE_UNVERIFIED, mismatch,
                                        {"symbol": sym, "wanted_leverage": self.params.risk.leverage_of(sym),
                                         "wanted_margin_mode": self.params.risk.margin_mode}))

    def _read_brackets(self) -> None:
        """The exchange's maintenance brackets into the RiskEngine (its liquidation check)."""
        if not self.broker.venue.leverage_tiers:
            log.warning("maintenance brackets are not read on %s: the liquidation check uses Binance's BTCUSDT "
                        "table", self.broker.venue.name)
            return
        try:
            self.loop.risk.brackets.update(venue_brackets(self.broker, self.symbols))
        except ccxt.BaseError as exc:
            log.error("maintenance brackets not read (%s): the liquidation check uses Binance's BTCUSDT table",
                      self.broker.error_text(exc))

    def _refresh_funding(self) -> None:
        """The settled funding rates for the RiskEngine's funding filter; again after each funding time."""
        now_ms = int(self.broker.read(lambda: self.ex.fetch_time()))
        if self._funding_until is not None and now_ms < self._funding_until:
            return
        try:
            self.loop.risk.funding = venue_funding(self.broker, self.symbols)
        except ccxt.BaseError as exc:
            log.error("funding history not read (%s); tried again at the next bar", self.broker.error_text(exc))
            return
        self._funding_until = now_ms - now_ms % FUNDING_EVERY_MS + FUNDING_EVERY_MS

    def _entry_fills_never_recorded(self, adopted: list[Fill]) -> list[Fill]:
        """Entries the journal says filled in an earlier run but the record lacks: the loop records
        a fill at the next bar, so a process killed between the fill and that bar left it only in
        the journal. The position itself is rebuilt from the exchange; this completes the record."""
        pending = {(f.symbol, f.order_id) for f in adopted if f.purpose == "entry"}
        missing = []
        for row in self.journal.rows("purpose='entry' AND status IN ('filled', 'partial') AND fill_ts IS NOT NULL "
                                     "AND filled_qty > 0 AND run_id IS NOT ?", (self.run_id,)):
            ts = pd.Timestamp(row["fill_ts"])
            if (row["symbol"], row["order_id"]) in pending or \
                    self.store.has_fill(row["symbol"], "entry", row["order_id"], ts):
                continue
            qty, price = float(row["filled_qty"]), float(row["avg_price"])
            side = row.get("side") or "buy"
            missing.append(Fill(int(row["order_id"]), row["symbol"], ts, side, "entry",
                                "signal_sell" if side == "sell" else "signal_buy", qty, price,
                                qty * price, float(row["fee_usdt"] or 0.0)))
        if missing:
            log.warning("recorded %d entry fill(s) the previous run had not recorded: %s", len(missing),
                        ", ".join(f"{f.symbol} {f.qty:g} @ {f.price:g}" for f in missing))
        return missing

    def _prime_volatility(self, first_bar: pd.Timestamp) -> None:
        """Volatility-targeted sizing and the correlation cap: the exchange's candles before the first
        bar to step feed the estimate and the close history (``TradingLoop.prime_volatility``), so a
        (re)start sizes entries and measures correlations at once."""
        vol, history = self.loop.volatility, self.loop.risk.history  # history: the correlation cap's closes
        if vol is None and history is None:
            return
        first_ms = first_bar.value // 1_000_000
        n = max(0 if vol is None else vol.lookback + 1, 0 if history is None else history.keep)
        bars = self._bars(first_ms - n * self.bar_ms, first_ms - self.bar_ms)
        rows = [(b.symbol, b.timestamp, b.close) for per_ts in bars.values() for b in per_ts.values()]
        if rows:
            self.loop.prime_volatility(pd.DataFrame(rows, columns=["symbol", "timestamp", "close"]), first_bar)

    # ---- the clock -----------------------------------------------------------------------
    def _newest_closed_ms(self) -> int:
        now_ms = int(self.broker.read(lambda: self.ex.fetch_time()))
        return now_ms - now_ms % self.bar_ms - self.bar_ms

    def _last_bar(self) -> pd.Timestamp | None:
        row = self.store.conn.execute("SELECT last_bar_ts FROM live_progress WHERE namespace=?",
                                      (self.namespace,)).fetchone()
        return pd.Timestamp(row[0]) if row else None

    def _bars(self, first_ms: int, last_ms: int) -> dict[int, dict[str, Bar]]:
        """bar open (ms) -> symbol -> Bar for every bar in [first_ms, last_ms], in pages of 1000."""
        out: dict[int, dict[str, Bar]] = {}
        for sym in self.symbols:
            since = first_ms
            while since <= last_ms:
                n = min(1000, (last_ms - since) // self.bar_ms + 1)
                rows = self.broker.read(lambda: self.ex.fetch_ohlcv(sym, self.params.data.timeframe, since=since,
                                                                     limit=n))
                for row in rows:
                    t = int(row[0])
                    if first_ms <= t <= last_ms:
                        o, h, lo, c = (float(x) for x in row[1:5])
                        out.setdefault(t, {})[sym] = Bar(sym, pd.Timestamp(t, unit="ms", tz="UTC"), o, h, lo, c)
                if not rows or int(rows[-1][0]) < since:
                    break
                since = max(since + n * self.bar_ms, int(rows[-1][0]) + self.bar_ms)
        return out

    def poll(self) -> pd.Timestamp | None:
        """Step every closed bar not stepped yet - the missed ones without entries (``missed=True``),
        the newest one in full; returns the newest bar's open time, or None if it was stepped."""
        newest = self._newest_closed_ms()
        last = self._last_bar()
        if last is not None and newest <= last.value // 1_000_000:
            return None
        first = newest if last is None else last.value // 1_000_000 + self.bar_ms
        if self.market != "spot":
            self._refresh_funding()
        bars = self._bars(first, newest)
        if first < newest:
            log.warning("%d bar(s) closed unstepped since %s: accounted for one by one, entries only on the "
                        "newest (%s)", (newest - first) // self.bar_ms, last,
                        pd.Timestamp(newest, unit="ms", tz="UTC"))
        for bar_ms in range(first, newest, self.bar_ms):
            self._step(pd.Timestamp(bar_ms, unit="ms", tz="UTC"), bars.get(bar_ms, {}), missed=True)
        ts = pd.Timestamp(newest, unit="ms", tz="UTC")
        self._step(ts, bars.get(newest, {}))
        return ts

    def _step(self, ts: pd.Timestamp, bars: dict[str, Bar], missed: bool = False) -> None:
        self._watch.reset()
        self.loop.step(ts, bars, self.symbols, missed=missed)
        self._after_step(ts)
        self.store.conn.execute("INSERT OR REPLACE INTO live_progress VALUES (?, ?)", (self.namespace, ts.isoformat()))
        self.store.conn.commit()
        self.bars_stepped += 1
        if self.notifier:
            self.notifier.flush()  # "N more ... suppressed" once the storm's bucket has a token again

    def _after_step(self, ts: pd.Timestamp) -> None:
        """Refusals by the exchange (or the broker's filters), broker alerts and signal problems."""
        rejections, self.broker.rejections = self.broker.rejections, []
        self.loop.book_refusals(ts, rejections)
        alerts, self.broker.alerts = self.broker.alerts, []
        for kind, message, numbers in alerts:
            if kind == EMERGENCY_EXIT:
                self._record_emergency_exit(ts, numbers)
            self.loop.raise_alert(RiskAlert(ts, kind, message, numbers))
        if not self._watch.source_down:  # an outage already raised its own alert in the loop
            for reason, syms in sorted(self._watch.reasons.items()):
                self.loop.raise_alert(RiskAlert(ts, reason, f"no usable signal ({reason}) for {', '.join(syms)}: "
                                                            f"opening nothing, exits still managed",
                                                {"symbols": syms}))
        self.store.conn.commit()

    def _record_emergency_exit(self, ts: pd.Timestamp, numbers: dict) -> None:
        """The broker closed a position at market because its protective stop could not be placed:
        the exchange refused it as already crossed (``executor.live.emergency``). One ``exit`` /
        ``EMERGENCY_EXIT`` decision records it. Paper and backtest have no such case: their stop is
        always placed, and a bar gapping through it is a ``stop_loss`` / ``trailing_stop`` fill at the
        open (``qt.fills.stop_fill``)."""
        self.loop.record(Decision(ts, numbers["symbol"], None, "exit", EMERGENCY_EXIT, details=dict(numbers)))

    # ---- running ---------------------------------------------------------------------------
    def run(self, poll_interval_s: float = 5.0, max_bars: int | None = None,
            stop: threading.Event | None = None) -> None:
        """Poll the exchange clock until ``stop`` is set or ``max_bars`` bars were stepped."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.poll()
            except ccxt.NetworkError as exc:
                log.error("exchange unreachable (%s); trying again in %.1fs", type(exc).__name__, poll_interval_s)
            if max_bars is not None and self.bars_stepped >= max_bars:
                return
            stop.wait(poll_interval_s)

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            if self.metrics_server:
                self.metrics_server.stop()
            if self.notifier:
                self.notifier.flush()
                self.notifier.close()
            close = getattr(self.source, "close", None)
            if close is not None:
                close()
