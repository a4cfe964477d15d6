"""ATR-scaled protective levels live (issue 16): real ccxt against the local exchange.

The guards of an entry sit at ATR multiples of the signal's ATR (the feature code's ``atr_14`` of
the decision bar, sent by the signal service); a restart that must re-place a missing guard puts
it back at the level the journal says it had - not at ``risk.stop_loss_pct``, which is not this
position's level - and a position the journal does not know is guarded with the ATR of the
exchange's last closed bar. Expected ATRs come from ``features.compute`` on the same candles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exchange import write_datadir
from features.compute import compute_features
from qt.config import FeatureParams
from tests.executor.exec_support import signals_frame
from tests.executor.live.support import SYMBOL, T0, bar_ms, client, running_exchange, trader_factory

pytestmark = pytest.mark.slow

N_BARS = 420
PRICE = 30_000.0
K_STOP, K_TAKE = 2.0, 4.0
ATR_RISK = {"stop_loss_atr": K_STOP, "take_profit_atr": K_TAKE}
ENTRY_BAR, UNKNOWN_BAR = 332, 372  # the features are defined (warm-up 270 bars) well before


def _candles() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    spread = PRICE * rng.uniform(0.001, 0.006, N_BARS)  # ranges that vary: an ATR that is not a constant
    return pd.DataFrame({"symbol": SYMBOL, "timestamp": pd.date_range(T0, periods=N_BARS, freq="1h", tz="UTC"),
                         "open": PRICE, "high": PRICE + spread / 2, "low": PRICE - spread / 2, "close": PRICE,
                         "volume": 1_000.0})


def _atr() -> pd.Series:
    """atr_14 (ATR / close) per bar open time, by the feature code."""
    feats = compute_features(_candles(), FeatureParams())
    return feats.set_index("timestamp")["atr_14"]


def _signals() -> pd.DataFrame:
    actions = ["buy" if i == ENTRY_BAR - 2 else "hold" for i in range(N_BARS)]
    sig = signals_frame({SYMBOL: actions})
    return sig.assign(atr=_atr().reindex(pd.DatetimeIndex(sig["timestamp"])).to_numpy())


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    root = tmp_path_factory.mktemp("atr-market")
    funding = pd.DataFrame({"symbol": SYMBOL, "timestamp": pd.date_range(T0, periods=N_BARS // 8, freq="8h",
                                                                         tz="UTC"), "funding_rate": 0.0})
    write_datadir(_candles(), root, "1h", funding=funding)
    with running_exchange(root) as ex:
        ex.reset_account()
        yield ex


@pytest.fixture
def make_trader(venue, tmp_path):
    with trader_factory(lambda: client(venue), _signals(), SYMBOL, tmp_path / "state.sqlite", "atr") as make:
        yield make


def _guards(venue) -> dict[str, float]:
    return {o["info"]["orderType"]: o["triggerPrice"]
            for o in client(venue).fetch_open_orders(SYMBOL, params={"trigger": True})}


def test_atr_levels_live_guards_sit_at_atr_multiples_and_a_restart_re_places_a_missing_stop_at_its_level(
        make_trader, venue):
    venue.reset_account()
    venue.move_clock_to(bar_ms(ENTRY_BAR - 1))
    make_trader(**ATR_RISK).poll()  # the buy of bar ENTRY_BAR - 2, filled at the close (30 000)
    atr = float(_atr()[T0 + pd.Timedelta(hours=ENTRY_BAR - 2)])
    assert 0.001 < atr < 0.006
    guards = _guards(venue)
    assert guards["STOP_MARKET"] == pytest.approx(PRICE * (1 - K_STOP * atr), abs=0.1)
    assert guards["TAKE_PROFIT_MARKET"] == pytest.approx(PRICE * (1 + K_TAKE * atr), abs=0.1)
    c = client(venue)
    (stop,) = [o for o in c.fetch_open_orders(SYMBOL, params={"trigger": True})
               if o["info"]["orderType"] == "STOP_MARKET"]
    c.cancel_order(stop["id"], SYMBOL, {"trigger": True})  # behind the executor's back, while it is down
    venue.advance(3)  # the ATR has moved on since: the level must come from the journal
    again = make_trader(**ATR_RISK)
    assert again.reconciled.protectives_placed == {SYMBOL: ["stop_loss"]}
    assert _guards(venue) == guards


def test_atr_levels_live_an_unknown_position_is_guarded_with_the_atr_of_the_last_closed_bar(make_trader, venue):
    venue.reset_account()
    venue.move_clock_to(bar_ms(UNKNOWN_BAR))
    c = client(venue)
    c.create_order(SYMBOL, "market", "buy", 0.01)  # by hand: the journal knows nothing of it
    trader = make_trader(**ATR_RISK)
    atr = float(_atr()[T0 + pd.Timedelta(hours=UNKNOWN_BAR - 1)])  # the last bar closed before the clock's
    guards = _guards(venue)
    assert guards["STOP_MARKET"] == pytest.approx(PRICE * (1 - K_STOP * atr), abs=0.1)
    assert guards["TAKE_PROFIT_MARKET"] == pytest.approx(PRICE * (1 + K_TAKE * atr), abs=0.1)
    assert guards["STOP_MARKET"] != pytest.approx(PRICE * (1 - 0.03), abs=1.0)  # not risk.stop_loss_pct's 3 %
    assert trader.loop.portfolio.positions[SYMBOL].qty == pytest.approx(0.01)
