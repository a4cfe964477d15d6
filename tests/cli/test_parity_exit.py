"""A broken backtest/paper parity fails `qt run` and summary.json names the first diverging trade."""

import json

import pandas as pd
from typer.testing import CliRunner

from qt.errors import QTError

T0 = pd.Timestamp("2024-03-01", tz="UTC")
H = pd.Timedelta(hours=1)


def _fills(rows, ts_column="timestamp"):
    """(symbol, hours after T0, side, purpose, qty, price) -> a fills frame like the backtest's or the store's."""
    return pd.DataFrame([{"symbol": s, ts_column: T0 + h * H, "side": side, "purpose": purpose, "qty": q, "price": p}
                         for s, h, side, purpose, q, p in rows])


BACKTEST = [("AAA/USDT", 1, "buy", "entry", 2.0, 100.0), ("BBB/USDT", 2, "buy", "entry", 1.0, 50.0),
            ("AAA/USDT", 5, "sell", "exit", 2.0, 101.0), ("BBB/USDT", 6, "sell", "exit", 1.0, 49.0),
            ("AAA/USDT", 8, "buy", "entry", 2.0, 99.0), ("AAA/USDT", 9, "sell", "exit", 2.0, 98.0)]
# the replay exits AAA's first trade one bar later at another price; everything before it is identical
REPLAY = [BACKTEST[0], BACKTEST[1], ("AAA/USDT", 6, "sell", "exit", 2.0, 102.0), *BACKTEST[3:]]
METRICS = {"net_pnl": 10.0, "trades": 3}


def test_parity_exit_identical_fills_have_no_divergence():
    from training.parity import first_divergent_trade, judge_parity

    assert first_divergent_trade(_fills(BACKTEST), _fills(BACKTEST, "ts")) is None
    block = judge_parity(METRICS, _fills(BACKTEST), METRICS, 10.0, _fills(BACKTEST, "ts"), tolerance_usdt=0.01)
    assert block["match"] is True and block["first_divergent_trade"] is None


def test_parity_exit_names_the_first_diverging_trade():
    from training.parity import judge_parity

    # same PnL and trade count on both sides: only the trades themselves show the divergence
    block = judge_parity(METRICS, _fills(BACKTEST), METRICS, 10.0, _fills(REPLAY, "ts"), tolerance_usdt=0.01)
    assert block["match"] is False
    first = block["first_divergent_trade"]
    assert first["symbol"] == "AAA/USDT" and first["index"] == 1  # AAA's second leg: the exit of its first trade
    assert first["backtest"]["price"] == 101.0 and first["replay"]["price"] == 102.0
    assert first["timestamp"] == (T0 + 5 * H).isoformat()


def test_parity_exit_a_missing_trade_is_a_divergence():
    from training.parity import first_divergent_trade

    first = first_divergent_trade(_fills(BACKTEST), _fills(BACKTEST[:-1], "ts"))
    assert first["symbol"] == "AAA/USDT" and first["index"] == 3
    assert first["backtest"]["purpose"] == "exit" and first["replay"] is None


def test_parity_exit_qt_run_fails_and_summary_names_the_trade(tmp_path, monkeypatch):
    """`qt run` with a replay that diverged: summary.json is written with the divergent trade, the command fails."""
    import flows.pipeline
    from cli.main import app
    from training.parity import judge_parity

    def fake_run_all(params, paths, redis_url=None):
        summary = {"executor": {"mode": "paper-replay", "parity_with_backtest": judge_parity(
            METRICS, _fills(BACKTEST), METRICS, 10.0, _fills(REPLAY, "ts"), tolerance_usdt=0.01)}}
        flows.pipeline.write_summary(summary, paths)
        return summary

    monkeypatch.setattr(flows.pipeline, "run_all", fake_run_all)
    monkeypatch.setenv("QT_HOME", str(tmp_path))
    monkeypatch.delenv("QT_PARAMS", raising=False)
    res = CliRunner().invoke(app, ["run", "--symbols", "S000/USDT"])
    assert res.exit_code != 0
    assert isinstance(res.exception, QTError) and "AAA/USDT #1" in str(res.exception)
    assert "\n" not in str(res.exception)
    written = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert written["executor"]["parity_with_backtest"]["first_divergent_trade"]["symbol"] == "AAA/USDT"
