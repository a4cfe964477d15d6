"""A listener that fails is never silent. The SQLite state recorder (the journal restart and the
dashboard read) failing stops new entries (``STATE_WRITE_FAILED``) while exits are still managed,
and raises an alert; metrics and notifier failures are counted in
``qt_executor_listener_failures_total{listener}`` and logged once per outage.

The recorder is a real ``StateStore`` whose SQLite connection is closed mid-run (every write then
raises ``sqlite3.ProgrammingError``, as a lost database would) and reopened later.
"""

from __future__ import annotations

import logging
import sqlite3

import pandas as pd

from executor.loop import LoopListener, TradingLoop
from executor.metrics import MetricsListener
from executor.paper import PaperBroker
from executor.signals import FrameSignalSource
from executor.state import StateStore
from tests.executor.exec_support import candles_from_rows, params, signals_frame, ts

SYM = "BTC/USDT"
N = 12
FLAT = [(100.0, 100.1, 99.9, 100.0)] * N
# buy at bar 0 (filled at 1); the recorder dies at bar 2; sell at bar 3 (exit filled at 4); buy again after
ACTIONS = ["buy", "hold", "hold", "sell"] + ["buy"] * (N - 4)
BREAK_AT, MEND_AT = 2, 6


class Alerts(LoopListener):
    """What a notifier hears: every alert."""

    def __init__(self):
        self.alerts = []

    def on_alert(self, alert) -> None:
        self.alerts.append(alert)


class BreakingSource(FrameSignalSource):
    """Signals from a frame; runs ``hooks[as_of]`` first (to break or mend the recorder mid-run)."""

    def __init__(self, frame, hooks):
        super().__init__(frame)
        self.hooks = hooks

    def fetch(self, symbols, as_of):
        if as_of in self.hooks:
            self.hooks.pop(as_of)()
        return super().fetch(symbols, as_of)


def _run(tmp_path, hooks_for, extra=()):
    p = params(data={"symbols": [SYM]}, risk={"cooldown_bars": 0})
    store = StateStore(tmp_path / "state.sqlite", "run-1")
    heard = Alerts()
    source = BreakingSource(signals_frame({SYM: ACTIONS}), hooks_for(store))
    loop = TradingLoop(p, source, PaperBroker(p.costs), listeners=[store, heard, *extra])
    result = loop.run(candles_from_rows({SYM: FLAT}))
    return result, store, heard


def _break(store):
    return lambda: store.conn.close()


def _mend(store):
    def reopen():
        store.conn = sqlite3.connect(str(store.path))
    return reopen


def test_listener_state_recorder_failure_stops_entries_keeps_exits_and_alerts(tmp_path):
    result, store, heard = _run(tmp_path, lambda s: {ts(BREAK_AT): _break(s)})
    entries = [o for o in result.orders if o.purpose == "entry"]
    assert [o.decided_ts for o in entries] == [ts(0)]  # nothing opened after the recorder broke
    exits = [f for f in result.fills if f.purpose == "exit"]
    assert [(f.timestamp, f.reason) for f in exits] == [(ts(4), "signal_flip")]  # the exit still happened
    refused = [d for d in result.decisions if d.reason == "STATE_WRITE_FAILED"]
    assert [d.timestamp for d in refused] == [ts(i) for i in range(4, N)]  # every later buy, refused by name
    assert all(d.outcome == "denied" for d in refused)
    assert [a.kind for a in heard.alerts].count("STATE_WRITE_FAILED") == 1  # one alert, not one per bar
    assert not result.portfolio.positions


def test_listener_state_recorder_halt_clears_after_a_whole_bar_is_written_again(tmp_path):
    result, store, heard = _run(tmp_path, lambda s: {ts(BREAK_AT): _break(s), ts(MEND_AT): _mend(s)})
    entries = [o.decided_ts for o in result.orders if o.purpose == "entry"]
    # the mend runs at bar MEND_AT's signal fetch, after that bar's equity write failed: bar MEND_AT + 1
    # is the first bar written whole again, so entries are allowed from the bar after it
    assert entries[:2] == [ts(0), ts(MEND_AT + 2)]
    refused = [d.timestamp for d in result.decisions if d.reason == "STATE_WRITE_FAILED"]
    assert refused == [ts(i) for i in range(4, MEND_AT + 2)]
    kinds = [a.kind for a in heard.alerts]
    assert kinds.count("STATE_WRITE_FAILED") == 1 and kinds.count("STATE_WRITE_RECOVERED") == 1
    store.conn.commit()
    written = pd.read_sql_query("SELECT ts, outcome FROM decisions WHERE outcome='enter'", store.conn)
    assert pd.Timestamp(ts(MEND_AT + 2)).isoformat() in written["ts"].tolist()  # the journal has it again
    store.close()


class FlakyNotifier(LoopListener):
    """A notifier whose channel is down for the bars in ``down``."""

    def __init__(self, down: set[pd.Timestamp]):
        self.down = down
        self.delivered = 0

    def on_equity(self, ts, equity_usdt, cash_usdt, state, portfolio) -> None:
        if ts in self.down:
            raise ConnectionError("webhook unreachable")
        self.delivered += 1


def test_listener_notifier_failures_are_counted_and_logged_once_per_outage(tmp_path, caplog):
    down = {ts(i) for i in (2, 3, 4, 8, 9)}  # two outages: bars 2-4 and 8-9
    metrics = MetricsListener()
    notifier = FlakyNotifier(down)
    caplog.set_level(logging.INFO, logger="executor")
    result, store, _ = _run(tmp_path, lambda s: {}, extra=(metrics, notifier))
    store.close()
    assert notifier.delivered == N - len(down)
    count = metrics.registry.get_sample_value("qt_executor_listener_failures_total",
                                              {"listener": "FlakyNotifier"})
    assert count == len(down)
    failed = [r for r in caplog.records if "FlakyNotifier" in r.getMessage() and "failed" in r.getMessage()]
    back = [r for r in caplog.records if "FlakyNotifier" in r.getMessage() and "recovered" in r.getMessage()]
    assert len(failed) == 2 and len(back) == 2  # one line when each outage starts, one when it ends
    assert [o.decided_ts for o in result.orders if o.purpose == "entry"][0] == ts(0)  # trading unaffected
    assert not [d for d in result.decisions if d.reason == "STATE_WRITE_FAILED"]
