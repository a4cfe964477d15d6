"""Redis Streams events, the kill switch and the heartbeat - best effort, never blocking trading.

Streams (XADD with approximate ``MAXLEN``): ``trade.intent`` (every approved order and every
denied entry except NO_SIGNAL), ``execution.result`` (fills and cancellations),
``position.update`` (position after each fill), ``risk.alert`` (state changes, signal
outages). Keys: ``qt:kill`` (any value => HALTED: no new entries, exits continue; deleted =>
trading again - ``qt kill`` / ``qt resume``, ``set_kill_switch`` / ``clear_kill_switch``),
``qt:executor:heartbeat`` (ISO time of the last finished bar, expires after ``ttl``).

If Redis is down the executor keeps trading: each lost event is counted (``lost_events``),
a warning is logged once per outage, and reconnection is tried again after
``retry_after_s``. The kill switch then keeps its last known value.
"""

from __future__ import annotations

import json
import logging
import time

import pandas as pd
import redis

from executor.core import NO_SIGNAL, Decision
from executor.loop import LoopListener
from executor.paper import MarketOrder
from executor.portfolio import ClosedTrade, Fill, Portfolio
from executor.risk import RiskAlert

log = logging.getLogger(__name__)

STREAMS = ("trade.intent", "execution.result", "position.update", "risk.alert")
KILL_KEY = "qt:kill"
HEARTBEAT_KEY = "qt:executor:heartbeat"
HEARTBEAT_TTL_S = 120  # the heartbeat key's lifetime: its age is HEARTBEAT_TTL_S - TTL left


def set_kill_switch(client: redis.Redis, reason: str, by: str) -> dict:
    """What ``qt kill`` and the dashboard's Kill button write: ``qt:kill`` = JSON who/why/when.

    Every executor on this Redis reads any value as HALTED at its next bar (no new entries,
    exits go on). Connection errors are left to the caller, who names the URL."""
    value = {"reason": reason, "by": by, "at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}
    client.set(KILL_KEY, json.dumps(value))
    return value


def clear_kill_switch(client: redis.Redis) -> bool:
    """What ``qt resume`` and the Resume button do: delete ``qt:kill`` (True if it was set).
    A running executor halted by the switch goes back to trading at its next bar."""
    return bool(client.delete(KILL_KEY))


def _flat(fields: dict) -> dict[str, str]:
    return {k: (v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in fields.items()}


class EventPublisher:
    def __init__(self, url: str, maxlen: int = 10_000, retry_after_s: float = 1.0, timeout_s: float = 0.25):
        self.url = url
        self.maxlen = maxlen
        self.retry_after_s = retry_after_s
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.lost_events = 0
        self.published = 0
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._killed = False

    @property
    def connected(self) -> bool:
        return self._down_since is None

    def _call(self, fn):
        """Run one Redis call; on failure mark the outage and return None."""
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            return None
        try:
            out = fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if self._down_since is None:
                self._down_since = now
                log.warning("redis %s unreachable (%s): events are being LOST, trading continues", self.url, exc)
            self._retry_at = now + self.retry_after_s
            return None
        if self._down_since is not None:
            log.warning("redis %s back after %.1fs; %d events lost so far", self.url, now - self._down_since,
                        self.lost_events)
            self._down_since = None
        return out

    def publish(self, stream: str, fields: dict) -> bool:
        ok = self._call(lambda: self.client.xadd(stream, _flat(fields), maxlen=self.maxlen, approximate=True))
        if ok is None:
            self.lost_events += 1
            return False
        self.published += 1
        return True

    def is_killed(self) -> bool:
        value = self._call(lambda: self.client.get(KILL_KEY))
        if value is not None or self.connected:
            self._killed = value is not None
        return self._killed

    def heartbeat(self, ts: pd.Timestamp, ttl_s: int = HEARTBEAT_TTL_S) -> None:
        self._call(lambda: self.client.set(HEARTBEAT_KEY, pd.Timestamp(ts).isoformat(), ex=ttl_s))


class EventRecorder(LoopListener):
    """Loop listener that turns loop events into stream entries."""

    def __init__(self, publisher: EventPublisher, heartbeat_ttl_s: int = HEARTBEAT_TTL_S):
        self.pub = publisher
        self.heartbeat_ttl_s = heartbeat_ttl_s

    def on_order(self, order: MarketOrder, decision: Decision) -> None:
        self.pub.publish("trade.intent", {
            "verdict": "approved", "order_id": order.order_id, "symbol": order.symbol, "side": order.side,
            "purpose": order.purpose, "reason": order.reason, "notional_usdt": order.notional_usdt,
            "qty": order.qty, "decided_ts": str(order.decided_ts), "details": decision.details})

    def on_decision(self, d: Decision) -> None:
        if d.outcome == "denied" and d.reason != NO_SIGNAL:
            self.pub.publish("trade.intent", {"verdict": "denied", "symbol": d.symbol, "reason": d.reason,
                                              "decided_ts": str(d.timestamp), "details": d.details})

    def on_cancel(self, order: MarketOrder, ts: pd.Timestamp) -> None:
        self.pub.publish("execution.result", {"status": "cancelled", "order_id": order.order_id,
                                              "symbol": order.symbol, "ts": str(ts), "reason": "NO_BAR"})

    def on_fill(self, fill: Fill, portfolio: Portfolio, trade: ClosedTrade | None) -> None:
        self.pub.publish("execution.result", {
            "status": "filled", "order_id": fill.order_id, "symbol": fill.symbol, "ts": str(fill.timestamp),
            "side": fill.side, "purpose": fill.purpose, "reason": fill.reason, "qty": fill.qty,
            "price": fill.price, "notional_usdt": fill.notional_usdt, "fee_usdt": fill.fee_usdt,
            "pnl_usdt": trade.pnl_usdt if trade else None})
        pos = portfolio.positions.get(fill.symbol)
        self.pub.publish("position.update", {
            "symbol": fill.symbol, "ts": str(fill.timestamp), "qty": pos.qty if pos else 0.0,
            "entry_price": pos.entry_price if pos else None, "stop_price": pos.stop_price if pos else None,
            "take_profit_price": pos.take_profit_price if pos else None, "cash_usdt": portfolio.cash_usdt})

    def on_alert(self, alert: RiskAlert) -> None:
        self.pub.publish("risk.alert", {"ts": str(alert.timestamp), "kind": alert.kind, "message": alert.message,
                                        "numbers": alert.numbers})

    def on_bar_done(self, ts: pd.Timestamp) -> None:
        self.pub.heartbeat(ts, self.heartbeat_ttl_s)
