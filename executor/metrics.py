"""Prometheus metrics of a running executor: a LoopListener plus a loopback HTTP endpoint.

Why: a trading daemon is watched, not read. ``MetricsListener`` keeps, in its OWN
``CollectorRegistry`` (two executors in one process, or tests, never collide with the
global one), what an operator alerts on:

* ``qt_executor_equity_usdt``, ``qt_executor_cash_usdt`` and ``qt_executor_drawdown_ratio``
  (fraction below the highest equity seen since the start of the run);
* ``qt_executor_open_positions``;
* ``qt_executor_orders_total{status}``: ``submitted`` (sent to the broker), ``filled``
  (first fill of an order), ``cancelled`` (never filled), ``rejected`` (refused by the exchange);
* ``qt_executor_rejections_total{reason}``: decisions denied by the risk engine (or refused
  by the exchange), by reason (``NO_SIGNAL``, ``MAX_OPEN_POSITIONS``, ``HALTED`` ...);
* ``qt_executor_heartbeat_age_seconds``: wall-clock seconds since the loop last completed a
  bar (computed at scrape time, so a hung daemon shows a growing age);
* ``qt_executor_listener_failures_total{listener}``: loop listener calls that raised (the loop
  logs each outage once, ``executor.listeners``);
* ``qt_executor_kill_switch``: 1 while the risk engine is HALTED (the ``qt:kill`` key or the
  drawdown limit), ``qt_executor_trading_state{state}``: 1 for the current state, 0 for the others.

``MetricsServer`` serves the registry with prometheus_client's WSGI server on loopback and
can be stopped (the daemons stop it when they exit). Listener hooks only update numbers:
they never raise into the loop and do no I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from executor.loop import LoopListener
from executor.risk import TradingState

log = logging.getLogger(__name__)

ORDER_STATUSES = ("submitted", "filled", "cancelled", "rejected")
_PREFIX = "qt_executor"


class MetricsListener(LoopListener):
    """Every hook only sets numbers (no I/O, nothing that can stop the loop)."""

    def __init__(self, peak_equity_usdt: float | None = None, clock: Callable[[], float] = time.time):
        self.registry = CollectorRegistry()
        self._clock = clock
        self._peak = peak_equity_usdt
        self._last_beat = clock()  # start-up counts as a beat: the age grows from here until the first bar
        self._filled_ids: set[int] = set()
        r = self.registry
        self.equity = Gauge(f"{_PREFIX}_equity_usdt", "Marked equity at the last bar close (USDT)", registry=r)
        self.cash = Gauge(f"{_PREFIX}_cash_usdt", "Free cash at the last bar close (USDT)", registry=r)
        self.drawdown = Gauge(f"{_PREFIX}_drawdown_ratio", "1 - equity / highest equity of the run", registry=r)
        self.open_positions = Gauge(f"{_PREFIX}_open_positions", "Positions held", registry=r)
        self.orders = Counter(f"{_PREFIX}_orders", "Orders by status transition", ["status"], registry=r)
        self.fills = Counter(f"{_PREFIX}_fills", "Fills booked", registry=r)
        self.rejections = Counter(f"{_PREFIX}_rejections", "Denied or refused decisions by reason", ["reason"],
                                  registry=r)
        self.alerts = Counter(f"{_PREFIX}_alerts", "Risk alerts by kind", ["kind"], registry=r)
        self.bars = Counter(f"{_PREFIX}_bars", "Bars stepped", registry=r)
        self.listener_failures = Counter(f"{_PREFIX}_listener_failures", "Loop listener calls that raised",
                                         ["listener"], registry=r)
        self.last_bar = Gauge(f"{_PREFIX}_last_bar_timestamp_seconds", "Open time of the last completed bar",
                              registry=r)
        self.heartbeat_age = Gauge(f"{_PREFIX}_heartbeat_age_seconds",
                                   "Seconds since the loop last completed a bar", registry=r)
        self.heartbeat_age.set_function(lambda: max(0.0, self._clock() - self._last_beat))
        self.kill_switch = Gauge(f"{_PREFIX}_kill_switch", "1 while trading is HALTED (kill switch)", registry=r)
        self.state = Gauge(f"{_PREFIX}_trading_state", "1 for the current trading state", ["state"], registry=r)
        for status in ORDER_STATUSES:
            self.orders.labels(status=status)  # exported as 0 before the first order
        self._set_state(TradingState.ACTIVE)

    # ---- listener hooks -------------------------------------------------------------------
    def on_order(self, order, decision) -> None:
        self.orders.labels(status="submitted").inc()

    def on_cancel(self, order, ts) -> None:
        self.orders.labels(status="cancelled").inc()

    def on_fill(self, fill, portfolio, trade) -> None:
        self.fills.inc()
        if fill.order_id > 0 and fill.order_id not in self._filled_ids:  # a partial fill counts once
            self._filled_ids.add(fill.order_id)
            self.orders.labels(status="filled").inc()
        self.open_positions.set(len(portfolio.positions))

    def on_decision(self, decision) -> None:
        if decision.outcome in ("denied", "rejected"):
            self.rejections.labels(reason=decision.reason).inc()
        if decision.outcome == "rejected":
            self.orders.labels(status="rejected").inc()

    def on_equity(self, ts, equity_usdt: float, cash_usdt: float, state: TradingState, portfolio) -> None:
        self._peak = equity_usdt if self._peak is None else max(self._peak, equity_usdt)
        self.equity.set(equity_usdt)
        self.cash.set(cash_usdt)
        self.drawdown.set(1.0 - equity_usdt / self._peak if self._peak > 0 else 0.0)
        self.open_positions.set(len(portfolio.positions))
        self._set_state(state)

    def on_alert(self, alert) -> None:
        self.alerts.labels(kind=alert.kind).inc()

    def on_listener_failure(self, listener: str) -> None:
        self.listener_failures.labels(listener=listener).inc()

    def on_bar_done(self, ts) -> None:
        self._last_beat = self._clock()
        self.last_bar.set(ts.timestamp())
        self.bars.inc()

    # ---- helpers ----------------------------------------------------------------------------
    def _set_state(self, state: TradingState) -> None:
        for s in TradingState:
            self.state.labels(state=s.value).set(1.0 if s is state else 0.0)
        self.kill_switch.set(1.0 if state is TradingState.HALTED else 0.0)


class MetricsServer:
    """``registry`` on ``http://host:port/metrics`` (port 0 = any free one); ``stop()`` closes the port."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1"):
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            from qt.errors import UserError

            raise UserError(f"cannot serve executor metrics on {host}:{port}: {exc.strerror or exc}; "
                            f"choose another --metrics-port") from None
        self.host = host
        self.port = int(self._server.server_port)
        log.info("executor metrics on http://%s:%d/metrics", host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics(port: int | None, peak_equity_usdt: float | None = None
                  ) -> tuple[MetricsListener | None, MetricsServer | None]:
    """The daemons' switch: ``port`` None = no metrics; else a listener and its running endpoint."""
    if port is None:
        return None, None
    listener = MetricsListener(peak_equity_usdt=peak_equity_usdt)
    return listener, MetricsServer(listener.registry, port)
