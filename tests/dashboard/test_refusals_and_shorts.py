"""What the dashboard reads of issue 16: every refused entry is among its alerts (the rule's reason
code and numbers), and an open short shows a negative quantity whose unrealised PnL rises as the
price falls. A real paper replay over HTTP writes the SQLite state the dashboard reads."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import calc
from dashboard.state_reader import read_run
from executor.daemon import run_paper_replay
from executor.signals import HttpSignalSource

from tests.executor.exec_support import FakeSignalService, candles_from_rows, params, signals_frame, ts

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def test_refused_entries_are_alerts_and_an_open_short_has_a_negative_qty(tmp_path):
    falling = [(100.0 - i, 100.5 - i, 99.0 - i, 99.5 - i) for i in range(6)]
    candles = candles_from_rows({BTC: falling, ETH: falling})
    signals = signals_frame({BTC: ["sell"] * 5, ETH: ["buy"] * 5})
    funding = pd.DataFrame({"symbol": [BTC, ETH], "timestamp": [ts(0) - pd.Timedelta(hours=1)] * 2,
                            "funding_rate": [0.002, 0.002]})  # longs pay a lot: the filter refuses ETH's long
    p = params(data={"symbols": [BTC, ETH]},
               risk={"allow_short": True, "max_entry_funding_rate": 0.001, "exit_on_signal_flip": False,
                     "stop_loss_pct": 0.2, "take_profit_pct": 0.5})
    with FakeSignalService(signals) as svc:
        source = HttpSignalSource(svc.url, timeout_s=5)
        try:
            run_paper_replay(candles, source, p, tmp_path / "state.sqlite", None, start=ts(0), funding=funding)
        finally:
            source.close()
    view = read_run(tmp_path / "state.sqlite")
    refused = view.alerts[view.alerts["kind"] == "FUNDING_FILTER"]
    assert len(refused) == 5  # ETH's buy at each of the 5 signalled bars
    assert refused["message"].str.startswith(f"{ETH}: entry refused (FUNDING_FILTER)").all()
    assert refused["message"].str.contains('"rate": 0.002').all()
    assert view.alerts["ts"].is_monotonic_decreasing  # newest first, alerts and refusals together
    short = view.positions.set_index("symbol").loc[BTC]
    assert short["qty"] < 0
    marked = calc.unrealised_pnl(view.positions, {BTC: 94.5})
    entry = short["entry_price"]
    assert marked.set_index("symbol").loc[BTC, "unrealised_pnl_usdt"] == pytest.approx(short["qty"] * (94.5 - entry))
    assert marked.set_index("symbol").loc[BTC, "unrealised_pnl_usdt"] > 0  # the price fell: the short gains
