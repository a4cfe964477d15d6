"""A stop the exchange refuses because the price is already through it: the live executor
exits at market at once (reduce-only), records ``EMERGENCY_EXIT`` and alerts, instead of
re-sending an impossible stop every bar while the position stays unguarded.

Real ccxt against the real local exchange, on Binance USDT-M and on Bybit USDT perpetuals (the same
broker code; ``venues`` says how each venue reads back its orders). The market sits at 30 000; the
hand-made bars below fall through the 3 % stop (29 100 for an entry at 30 000). The local exchange
fills a market order at the close of the bar open at its clock and refuses a stop at or above that
close (-2021; Bybit's retCode 110092/110093), as the venues refuse a stop at or above the last price.

The last case (Binance) runs ``qt execute --mode testnet`` as a real process: killed with SIGKILL while
holding a guarded position, restarted after its stop was cancelled and the price gapped through
it - the restarted daemon's start-up (reconciliation) closes the position before it steps a bar.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pandas as pd
import pytest

from tests.executor.exec_support import FakeSignalService, signals_frame
from tests.executor.live import support
from tests.executor.live.support import SYMBOL, bar_ms, calm_bars, start_daemon
from tests.executor.live.venues import BINANCE, only, venue_fixtures

pytestmark = pytest.mark.slow

N_BARS = 120
FLAT = 30_000.0
SL = 0.03  # the default risk.stop_loss_pct
LIMIT_ENTRY_BAR, LIMIT_CRASH = 21, 28_000.0  # the limit buy fills in this bar, which closes far below its stop
CANCEL_ENTRY_BAR, CANCEL_FALL = 41, 28_500.0  # entered at this bar's close; the next bar falls below the stop
DOWN_ENTRY_BAR, DOWN_GAP = 61, 28_200.0  # entered; the next bar gaps below the stop while the executor is down
KILL_ENTRY_BAR, KILL_GAP = 81, 28_300.0  # the daemon process enters, is killed; the next bar gaps below the stop
SPECIAL = {LIMIT_ENTRY_BAR: (FLAT, FLAT * 1.001, LIMIT_CRASH, LIMIT_CRASH),
           CANCEL_ENTRY_BAR + 1: (FLAT, FLAT * 1.001, CANCEL_FALL, CANCEL_FALL),
           DOWN_ENTRY_BAR + 1: (DOWN_GAP, DOWN_GAP * 1.001, DOWN_GAP * 0.999, DOWN_GAP),
           KILL_ENTRY_BAR + 1: (KILL_GAP, KILL_GAP * 1.001, KILL_GAP * 0.999, KILL_GAP)}


def _signals() -> pd.DataFrame:
    """``buy`` only at the close of the bar before each case's entry bar: an exit is never re-entered."""
    buys = {LIMIT_ENTRY_BAR - 2, CANCEL_ENTRY_BAR - 1, DOWN_ENTRY_BAR - 1, KILL_ENTRY_BAR - 1}
    return signals_frame({SYMBOL: ["buy" if i in buys else "hold" for i in range(N_BARS)]})


def _candles() -> pd.DataFrame:
    return calm_bars(N_BARS, SPECIAL, FLAT)


adapter, exchange, venue, make_trader = venue_fixtures(_candles, _signals)


def _open_protectives(adapter, venue) -> list[str]:
    return sorted(adapter.kind(o) for o in adapter.protective_orders(venue))


def _cancel_stop_behind_our_back(adapter, venue) -> None:
    adapter.cancel_protective(venue, adapter.protective_id(venue, adapter.stop))


def _sells(adapter, venue) -> list[dict]:
    return [o for o in adapter.orders(venue) if o["side"] == "sell"]


def _assert_exited_in_an_emergency(trader, venue, adapter, exit_price: float) -> None:
    assert adapter.position_qty(venue) == 0
    assert _open_protectives(adapter, venue) == []  # nothing left guarding a position that is gone
    assert [(o["type"], o["reduceOnly"], o["status"]) for o in _sells(adapter, venue)] == [("market", True, "closed")]
    fills = trader.store.read("fills")
    exit_ = fills[fills["purpose"] == "exit"]
    assert exit_["reason"].tolist() == ["emergency_exit"]
    assert exit_["price"].iloc[0] == pytest.approx(exit_price)
    assert trader.loop.portfolio.positions == {}
    decisions = trader.store.read("decisions")
    assert "EMERGENCY_EXIT" in decisions["reason"].tolist()
    assert "EMERGENCY_EXIT" in trader.store.read("alerts")["kind"].tolist()


def test_emergency_exit_when_a_limit_entry_fills_in_a_bar_that_closes_below_its_stop(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(LIMIT_ENTRY_BAR - 1))
    trader = make_trader(entry_order="limit", limit_offset_bps=5.0, limit_ttl_bars=2)
    trader.poll()  # a limit buy at 30 000 x (1 - 0.0005) rests
    limit = FLAT * (1 - 0.0005)
    assert limit * (1 - SL) > LIMIT_CRASH  # the entry's stop is above the price once it has filled
    venue.advance(1)  # the limit fills in the crash bar; a stop at limit x 0.97 would trigger at once
    trader.poll()
    fills = trader.store.read("fills")
    assert fills[fills["purpose"] == "entry"]["price"].tolist() == [pytest.approx(limit)]
    _assert_exited_in_an_emergency(trader, venue, adapter, LIMIT_CRASH)


def test_emergency_exit_when_the_stop_is_cancelled_behind_our_back_during_a_fall(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(CANCEL_ENTRY_BAR))
    trader = make_trader()
    trader.poll()  # enters at 30 000, guarded at 29 100 / 31 800
    assert _open_protectives(adapter, venue) == [adapter.stop, adapter.take]
    _cancel_stop_behind_our_back(adapter, venue)
    venue.advance(1)  # falls to 28 500, below where the stop was: nothing fires on the exchange
    trader.poll()  # re-placing the stop at 29 100 is impossible: exit at market instead
    _assert_exited_in_an_emergency(trader, venue, adapter, CANCEL_FALL)
    venue.advance(1)
    trader.poll()  # and nothing is retried at the next bar
    assert len(_sells(adapter, venue)) == 1


def test_emergency_exit_at_restart_when_the_price_gapped_below_the_stop_while_down(make_trader, venue, adapter):
    venue.move_clock_to(bar_ms(DOWN_ENTRY_BAR))
    make_trader().poll()  # entered at 30 000; then the executor dies (never closed)
    _cancel_stop_behind_our_back(adapter, venue)
    venue.advance(1)  # gaps to 28 200 while nobody watches
    restarted = make_trader()  # start-up alone: the exit is sent before any bar is stepped
    assert adapter.position_qty(venue) == 0
    restarted.poll()
    _assert_exited_in_an_emergency(restarted, venue, adapter, DOWN_GAP)


# ---- (a) with a real daemon process killed with SIGKILL ------------------------------------------------
def _rows(db, sql: str, args: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet by the daemon
        return []


@only(BINANCE)
def test_emergency_exit_by_a_daemon_restarted_after_kill_9_while_the_price_gapped_below_its_stop(venue, adapter,
                                                                                                tmp_path):
    """``qt execute --mode testnet`` enters at 30 000 (guarded at 29 100 / 31 800) and is killed
    with SIGKILL; while it is down its stop is cancelled and the next bar gaps to 28 300. The
    restarted process closes the position at market (reduce-only) during its start-up, before it
    steps a bar, and records EMERGENCY_EXIT in its state database."""
    home, log = tmp_path / "home", tmp_path / "daemon.log"
    db = home / "executor" / "state.sqlite"
    assert FLAT * (1 - SL) > KILL_GAP  # the gap bar is below the entry's stop: a stop cannot rest there
    venue.move_clock_to(bar_ms(KILL_ENTRY_BAR))  # bar 80 has closed with a buy: the entry is decided there
    first = second = None
    with FakeSignalService(_signals()) as svc:
        try:
            first = start_daemon(venue.url, svc.url, home, log)
            stepped = pd.Timestamp(bar_ms(KILL_ENTRY_BAR - 1), unit="ms", tz="UTC").isoformat()
            support.wait_for(lambda: _open_protectives(adapter, venue) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
                             and _rows(db, "SELECT last_bar_ts FROM live_progress") == [(stepped,)],
                             60, "the guarded entry", first, log)
            os.killpg(first.pid, signal.SIGKILL)  # kill -9 while holding the position
            first.wait(timeout=10)
            assert adapter.position_qty(venue) > 0
            _cancel_stop_behind_our_back(adapter, venue)
            venue.advance(1)  # gaps to 28 300 while nobody watches
            restarted_at = log.stat().st_size
            second = start_daemon(venue.url, svc.url, home, log)
            support.wait_for(lambda: ("EMERGENCY_EXIT",) in _rows(db, "SELECT kind FROM alerts"), 60,
                             "the EMERGENCY_EXIT alert", second, log)
            time.sleep(0.5)  # polling on: nothing more may be sent
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
        finally:
            support.kill_9(first)
            support.kill_9(second)
    assert first.returncode == -signal.SIGKILL
    text = log.read_text()
    assert "Traceback" not in text, text

    # the exchange: flat, nothing guarding, exactly one reduce-only market sell at the gap bar's close
    assert adapter.position_qty(venue) == 0
    assert _open_protectives(adapter, venue) == []
    orders = adapter.orders(venue)
    (entry,) = [o for o in orders if o["side"] == "buy"]
    (exit_,) = [o for o in orders if o["side"] == "sell"]
    assert (exit_["type"], exit_["reduceOnly"], exit_["status"]) == ("market", True, "closed")
    assert exit_["filled"] == pytest.approx(entry["filled"])
    assert (entry["average"], exit_["average"]) == (pytest.approx(FLAT), pytest.approx(KILL_GAP))

    # before anything else: the sell went out during the restarted daemon's start-up
    after = text[restarted_at:]
    assert after.index("already crossed") < after.index("reconciled:"), after
    (first_run,) = _rows(db, "SELECT run_id FROM exchange_orders WHERE purpose='entry'")
    sent = _rows(db, "SELECT purpose, status, exchange_id FROM exchange_orders WHERE run_id != ? ORDER BY rowid",
                 first_run)
    assert [(p, s) for p, s, _ in sent if (p, s) != ("stop_loss", "rejected")] == [("exit", "filled")]
    assert [x for _, s, x in sent if s == "filled"] == [str(exit_["id"])]

    # the state database: one emergency exit fill, decision and alert, all by the restarted run
    (second_run,) = {r for r, in _rows(db, "SELECT run_id FROM exchange_orders WHERE run_id != ?", first_run)}
    # the entry filled just before the kill, before the loop recorded it: the restart records it once
    entries = _rows(db, "SELECT reason, qty, price FROM fills WHERE purpose='entry'")
    assert entries == [("signal_buy", pytest.approx(entry["filled"]), pytest.approx(FLAT))]
    exits = _rows(db, "SELECT run_id, reason, qty, price FROM fills WHERE purpose='exit'")
    assert exits == [(second_run, "emergency_exit", pytest.approx(entry["filled"]), pytest.approx(KILL_GAP))]
    assert _rows(db, "SELECT outcome FROM decisions WHERE reason='EMERGENCY_EXIT' AND run_id=?",
                 (second_run,)) == [("exit",)]
    assert len(_rows(db, "SELECT 1 FROM alerts WHERE kind='EMERGENCY_EXIT' AND run_id=?", (second_run,))) == 1
    assert _rows(db, "SELECT COUNT(*) FROM positions WHERE run_id=? AND qty > 0", (second_run,)) == [(0,)]
