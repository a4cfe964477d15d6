"""The executor daemon: signals over HTTP from the serving service, the same loop, state + events.

PAPER REPLAY: bars from the lake are replayed through the same ``TradingLoop`` the backtest
uses (paper broker), with the signals asked from the service (``POST {url}/signals``) at each
bar, every step written to SQLite and published to Redis. LIVE / TESTNET (``run_live``): the
same loop clocked by the exchange, orders through ccxt (``executor.live.trader``).

When the service cannot answer (connection refused, timeout, any 5xx incl. 503 "no
champion", malformed reply, or a 4xx saying our request is wrong) the source raises
``SignalUnavailable``: the loop opens nothing, keeps managing exits (protective orders,
max holding), records ``NO_SIGNAL`` decisions, publishes a ``risk.alert`` and logs an error.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ccxt
import pandas as pd

from executor.backtest import check_timeframe, warn_if_perps, result_from_loop
from executor.events import EventPublisher, EventRecorder
from executor.live.trader import LiveTrader
from executor.loop import TradingLoop
from executor.metrics import start_metrics
from executor.paper import PaperBroker
from executor.state import StateStore
from qt.binance import one_line
from qt.config import Params
from qt.errors import UserError
from qt.notify import NotifyingListener, start_notifier
from qt.redact import install_log_redaction, remove_log_redaction

log = logging.getLogger(__name__)


@dataclass
class ExecutorReport:
    mode: str
    signals: int  # signals received
    orders: int
    fills: int
    rejections: dict[str, int]  # denial reason -> count
    net_pnl: float
    open_positions: int
    metrics: dict[str, float]
    final_state: str = "ACTIVE"
    lost_events: int = 0
    run_id: str = ""
    alerts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def run_paper_replay(candles: pd.DataFrame, signal_source, params: Params, state_db: Path,
                     redis_url: str | None, start: pd.Timestamp | None = None,
                     funding: pd.DataFrame | None = None, metrics_port: int | None = None,
                     environ: Mapping[str, str] | None = None) -> ExecutorReport:
    """Replay ``candles`` from ``start`` through the trading loop, asking ``signal_source`` each bar.

    ``funding`` (``symbol, timestamp, funding_rate``) is required when ``candles`` hold a
    perp symbol; it is settled by the same loop code as in ``run_backtest`` (parity).

    Writes every order/fill/decision/equity point to ``state_db`` (new ``run_id`` per call)
    and, when ``redis_url`` is given, publishes events and obeys the ``qt:kill`` switch.
    Positions still open at the end stay open (reported in ``open_positions``).
    ``metrics_port``: serve Prometheus metrics on loopback while replaying (``executor.metrics``).
    A configured notify channel (``environ``, default ``os.environ``) hears fills and risk alerts.
    """
    bar_ms = check_timeframe(candles, params)
    warn_if_perps(candles["symbol"].unique(), params.risk.allow_short)
    run_id = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    publisher = EventPublisher(redis_url) if redis_url else None
    metrics, metrics_server = start_metrics(metrics_port, params.risk.starting_equity_usdt)
    notifier = start_notifier(params, environ)
    store = None
    try:
        store = StateStore(Path(state_db), run_id)
        listeners = [store] + ([EventRecorder(publisher)] if publisher else [])
        if metrics:
            listeners.append(metrics)
        if notifier:
            listeners.append(NotifyingListener(notifier))
        loop = TradingLoop(params, signal_source, PaperBroker(params.costs), listeners=listeners,
                           kill_switch=publisher.is_killed if publisher else None, bar_ms=bar_ms, funding=funding)
        result = loop.run(candles, start=start, close_at_end=False)
    finally:
        if store is not None:
            store.close()
        if metrics_server:
            metrics_server.stop()
        if notifier:
            notifier.flush()
            notifier.close()
    bt = result_from_loop(result)
    rejections = Counter(d.reason for d in result.decisions if d.outcome == "denied")
    lost = publisher.lost_events if publisher else 0
    if lost:
        log.warning("paper replay finished with %d events lost while redis was unreachable", lost)
    return ExecutorReport(mode="paper-replay", signals=result.signals_received, orders=len(result.orders),
                          fills=len(result.fills), rejections=dict(sorted(rejections.items())),
                          net_pnl=float(bt.metrics["net_pnl"]), open_positions=len(result.portfolio.positions),
                          metrics=bt.metrics, final_state=result.final_state.value, lost_events=lost,
                          run_id=run_id, alerts=[a.message for a in result.alerts if a.kind != "NO_SIGNAL"])


def run_live(params: Params, exchange, signal_source, state_db: Path, namespace: str, redis_url: str | None,
             poll_interval_s: float = 5.0, max_bars: int | None = None, secrets: tuple[str, ...] = (),
             stop=None, metrics_port: int | None = None) -> dict:
    """Trade ``params.data.symbols`` (USDT-M perpetuals, or spot) on ``exchange`` (a ccxt client with keys).

    Reconciles with the exchange first (``executor.live.reconcile``; spot: ``executor.live.spot``), then steps every bar the
    exchange closes through the same loop as the backtest (``executor.live.trader``) until ``stop``
    is set, ``max_bars`` bars were stepped, or the process is stopped (SIGTERM / Ctrl-C).
    Returns a summary: reconciliation, bars stepped, orders, fills, rejections, open positions.
    """
    redaction = install_log_redaction(secrets)  # tracebacks and %s args too, not only one_line paths
    trader = LiveTrader(params, exchange, signal_source, state_db, namespace, redis_url=redis_url,
                        secrets=secrets, metrics_port=metrics_port)
    try:
        report = trader.start()
        print(f"reconciled: {report.summary()}", flush=True)
        trader.run(poll_interval_s=poll_interval_s, max_bars=max_bars, stop=stop)
    except KeyboardInterrupt:
        pass
    except (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended) as exc:
        raise UserError(f"the exchange refused the API key: {one_line(exc, secrets)}; "
                        f"check QT_API_KEY / QT_API_SECRET") from None
    except ccxt.NetworkError as exc:
        raise UserError(f"the exchange is unreachable at start-up: {one_line(exc, secrets)}") from None
    finally:
        result = trader.loop.result()
        trader.close()
        remove_log_redaction(redaction)
    rejections = Counter(d.reason for d in result.decisions if d.outcome in ("denied", "rejected"))
    return {"mode": "live", "run_id": trader.run_id, "bars": trader.bars_stepped,
            "reconciled": trader.reconciled.summary() if trader.reconciled else None,
            "orders": len(result.orders), "fills": len(result.fills), "rejections": dict(sorted(rejections.items())),
            "open_positions": sorted(result.portfolio.positions), "final_state": result.final_state.value,
            "lost_events": trader.publisher.lost_events if trader.publisher else 0}
