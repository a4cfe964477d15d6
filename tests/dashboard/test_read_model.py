"""The dashboard's read model on the stores a real paper run leaves behind (SQLite state, the
lake, Redis, MLflow), and what it shows when a store is missing."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import calc
from dashboard.registry_reader import read_champion, read_drift
from dashboard.snapshot import Sources
from dashboard.state_reader import StateMissing, read_run
from executor.events import set_kill_switch
from qt.paths import StatePaths
from qt.procs import free_port, start_redis

from tests.dashboard.support import CYCLE, HOLD, START_EQUITY, SYMBOLS, dashboard_params, paper_run, register_champion


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished paper replay, published to a real redis-server (stopped after the run)."""
    home = tmp_path_factory.mktemp("home")
    proc, url = start_redis(home)
    try:
        p, paths, candles, report = paper_run(home, redis_url=url)
    finally:
        proc.stop()
    return p, paths, candles, report


def test_the_latest_run_is_read_with_every_bar_fill_and_open_position(run):
    p, paths, candles, report = run
    view = read_run(paths.executor_db)
    assert view.run_id == report.run_id and view.symbols == SYMBOLS
    assert len(view.equity) == candles["timestamp"].nunique()  # one equity point per replayed bar
    assert len(view.fills) == report.fills > 20
    assert len(view.positions) == report.open_positions and HOLD in set(view.positions["symbol"])
    assert view.state == report.final_state
    assert view.venue is None  # a paper replay trades on no venue
    last = candles.sort_values("timestamp").groupby("symbol").tail(1).set_index("symbol")["close"]
    held = sum(r.qty * last[r.symbol] for r in view.positions.itertuples())  # marked by hand at the last close
    assert view.equity["equity_usdt"].iloc[-1] == pytest.approx(view.equity["cash_usdt"].iloc[-1] + held)
    assert view.decisions["confidence"].notna().sum() == len(view.decisions)  # a signal every bar


def test_snapshot_marks_open_positions_at_the_latest_close_of_the_run(run):
    p, paths, candles, report = run
    snap = Sources(p, paths, None, f"http://127.0.0.1:{free_port()}").snapshot()
    last = candles.sort_values("timestamp").groupby("symbol").tail(1).set_index("symbol")["close"]
    for r in snap.positions.itertuples():
        assert r.mark_price == last[r.symbol]
        assert r.unrealised_pnl_usdt == pytest.approx(r.qty * (last[r.symbol] - r.entry_price))
    assert snap.symbol == CYCLE  # shown first: the most traded symbol (HOLD only entered once)
    assert len(snap.candles) == candles["timestamp"].nunique() and set(snap.candles["symbol"]) == {CYCLE}
    assert Sources(p, paths, None, "http://127.0.0.1:1").snapshot(symbol=HOLD).symbol == HOLD


def test_buy_and_hold_spans_the_run_and_splits_equity_over_its_symbols(run):
    p, paths, candles, report = run
    snap = Sources(p, paths, None, f"http://127.0.0.1:{free_port()}").snapshot()
    first, last = candles["timestamp"].min(), candles["timestamp"].max()
    c = candles.set_index(["symbol", "timestamp"])
    by_hand = sum(START_EQUITY / 2 * c.loc[(s, last), "close"] / c.loc[(s, first), "open"] for s in SYMBOLS)
    assert snap.buy_and_hold.index[0] == first and snap.buy_and_hold.iloc[-1] == pytest.approx(by_hand)
    assert len(snap.buy_and_hold) == len(snap.run.equity)


def test_drawdown_counts_from_the_starting_equity_and_every_new_peak():
    eq = pd.Series([9_000.0, 11_000.0, 9_900.0, 12_000.0])
    assert calc.drawdown(eq, 10_000.0).tolist() == pytest.approx([0.1, 0.0, 0.1, 0.0])


def test_buy_and_hold_by_hand_with_a_bar_missing_for_one_symbol():
    t = pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC")
    candles = pd.DataFrame({"symbol": ["A", "A", "A", "B", "B"], "timestamp": [t[0], t[1], t[2], t[0], t[2]],
                            "open": [100.0, 0, 0, 10.0, 0], "close": [110.0, 120.0, 90.0, 12.0, 8.0]})
    bh = calc.buy_and_hold(candles, pd.Series(t), 1_000.0)
    # 500 in A at 100 and 500 in B at 10; B has no bar at t1: its last close (12) holds
    assert bh.tolist() == pytest.approx([550 + 600, 600 + 600, 450 + 400])


def test_heartbeat_age_is_the_ttl_already_spent():
    assert calc.heartbeat_age_s(117_500, 120) == pytest.approx(2.5)
    assert calc.heartbeat_age_s(None, 120) is None and calc.heartbeat_age_s(-2, 120) is None


def test_every_missing_store_is_a_plain_status_not_a_crash(tmp_path):
    p = dashboard_params()
    paths = StatePaths(tmp_path / "empty")
    snap = Sources(p, paths, None, f"http://127.0.0.1:{free_port()}").snapshot()
    assert snap.run is None and "no executor state" in snap.missing["executor"]
    assert snap.health.redis.startswith("not configured") and snap.health.kill_switch_on is None
    assert snap.health.service.startswith("unreachable")
    assert snap.champion.version is None and "no MLflow registry" in snap.champion.note
    assert read_drift(paths.reports)["status"].startswith("never checked")
    with pytest.raises(StateMissing):
        read_run(paths.executor_db)
    down = Sources(p, paths, f"redis://127.0.0.1:{free_port()}/0", "http://127.0.0.1:1").snapshot()
    assert down.health.redis.startswith("unreachable") and down.health.kill_switch.startswith("unknown")


def test_health_shows_a_fresh_heartbeat_and_who_set_the_kill_switch(tmp_path):
    proc, url = start_redis(tmp_path)
    try:
        p, paths, candles, report = paper_run(tmp_path / "home", redis_url=url)
        sources = Sources(p, paths, url, f"http://127.0.0.1:{free_port()}")
        fresh = sources.snapshot().health
        assert fresh.redis == "ok" and fresh.kill_switch == "off" and fresh.kill_switch_on is False
        assert 0.0 <= fresh.heartbeat_age_s < 10.0
        assert pd.Timestamp(fresh.heartbeat_bar) == candles["timestamp"].max()  # the last bar it finished
        import redis as redis_lib

        set_kill_switch(redis_lib.Redis.from_url(url), reason="test halt", by="alice")
        killed = sources.snapshot().health
        assert killed.kill_switch_on is True and "test halt" in killed.kill_switch and "alice" in killed.kill_switch
    finally:
        proc.stop()


def test_champion_panel_reads_version_training_time_gates_and_importance(tmp_path):
    paths = StatePaths(tmp_path).ensure()
    importance = pd.DataFrame({"feature": ["rsi_14", "logret_1", "atr_14"], "xgboost": [0.2, 0.5, 0.3],
                               "nhits": [float("nan")] * 3, "ensemble": [0.25, 0.45, 0.30]})
    gates = [{"name": "beats_baselines", "passed": True, "value": 0.4, "threshold": 0.0},
             {"name": "max_drawdown", "passed": False, "value": 0.31, "threshold": 0.25}]
    version = register_champion(paths, "qt-dash", "2024-02-01T00:00:00+00:00", importance, gates)
    view = read_champion(paths.tracking_uri, "qt-dash", paths.mlflow_db)
    assert view.version == version and view.trained_at == "2024-02-01T00:00:00+00:00"
    assert view.gates == "FAILED: max_drawdown"
    assert [(g["gate"], g["result"], g["threshold"]) for g in view.gate_rows] == [
        ("beats_baselines", "pass", "0"), ("max_drawdown", "FAIL", "0.25")]
    assert view.importance["feature"].tolist() == ["logret_1", "atr_14", "rsi_14"]  # by the ensemble column
    assert read_champion(paths.tracking_uri, "no-such-model", paths.mlflow_db).version is None


def test_of_two_runs_in_one_store_the_newest_is_shown_and_the_older_can_be_chosen(tmp_path):
    *_, older = paper_run(tmp_path, bars=300)
    *_, newer = paper_run(tmp_path, bars=320)
    paths = StatePaths(tmp_path)
    view = read_run(paths.executor_db)
    assert view.run_id == newer.run_id and view.runs == [newer.run_id, older.run_id]
    assert len(view.equity) == 320 and len(view.fills) == newer.fills
    assert len(read_run(paths.executor_db, older.run_id).equity) == 300


def test_the_latest_drift_check_shows_its_verdict_and_breaches(tmp_path):
    from training.drift import Breach, DriftAssessment
    from training.drift_monitor import _write

    paths = StatePaths(tmp_path)
    verdict = DriftAssessment(True, [Breach("prediction_psi", 0.4, 0.25, "prediction PSI 0.40 > 0.25")], {})
    _write(paths, {"checked_at": "2024-03-01T04:30:00+00:00", **verdict.to_dict()})
    assert read_drift(paths.reports) == {"status": "DRIFTED", "checked_at": "2024-03-01T04:30:00+00:00",
                                         "breaches": ["prediction PSI 0.40 > 0.25"]}
    _write(paths, {"status": "no_champion", "drifted": False, "checked_at": "2024-03-02T04:30:00+00:00"})
    assert read_drift(paths.reports)["status"] == "no champion to check"
