"""The venue adapter's answers without a server: which refusals mean "stop already crossed" and which
cancel answers mean "already finished", in Bybit's words (real Bybit retMsgs, not only the local
exchange's), and which venue a ccxt client gets."""

from __future__ import annotations

import ccxt
import pytest

from executor.live.venue import BINANCE, BYBIT, venue_of
from qt.errors import ConfigError

REAL_110093 = ('bybit {"retCode":110093,"retMsg":"expect Falling, but trigger_price[291000000] >= '
               'current[285000000]??LastPrice","result":{},"retExtInfo":{},"time":1704103200000}')
REAL_110092 = ('bybit {"retCode":110092,"retMsg":"expect Rising, but trigger_price[300000000] <= '
               'current[310000000]??LastPrice","result":{},"retExtInfo":{},"time":1704103200000}')


def test_bybit_crossed_stop_codes_are_read_as_crossed_only_on_bybit():
    for text in (REAL_110092, REAL_110093):
        assert BYBIT.refused_as_crossed(ccxt.InvalidOrder(text))
        assert not BINANCE.refused_as_crossed(ccxt.InvalidOrder(text))  # Binance's own -2021 wording only
    assert not BYBIT.refused_as_crossed(ccxt.InvalidOrder('bybit {"retCode":110017,"retMsg":"reduce-only"}'))
    assert BINANCE.refused_as_crossed(ccxt.InvalidOrder('binanceusdm {"code":-2021,"msg":"Order would '
                                                        'immediately trigger."}'))


class _Cancelling:
    id = "bybit"

    def __init__(self, exc):
        self.exc = exc
        self.options = {}

    def cancel_order(self, oid, symbol, params=None):
        raise self.exc


@pytest.mark.parametrize("code", [110008, 110001])
def test_bybit_cancel_of_a_finished_order_is_order_not_found(code):
    exc = ccxt.InvalidOrder(f'bybit {{"retCode":{code},"retMsg":"This order has been completed or cancelled."}}')
    with pytest.raises(ccxt.OrderNotFound):
        BYBIT.cancel(_Cancelling(exc), "1", "BTC/USDT:USDT", True)
    other = ccxt.InvalidOrder('bybit {"retCode":10001,"retMsg":"params error"}')
    with pytest.raises(ccxt.InvalidOrder) as err:
        BYBIT.cancel(_Cancelling(other), "1", "BTC/USDT:USDT", True)
    assert not isinstance(err.value, ccxt.OrderNotFound)


def test_a_client_gets_its_venue_by_ccxt_id_and_an_unknown_one_is_refused():
    assert venue_of(ccxt.bybit()) is BYBIT and venue_of(ccxt.binanceusdm()) is BINANCE
    assert venue_of(ccxt.binance()) is BINANCE
    with pytest.raises(ConfigError, match="okx"):
        venue_of(ccxt.okx())
    client = _Cancelling(None)
    BYBIT.prepare(client)
    assert client.options == {"fetchOrder": {"acknowledged": True}}


class _Reading:
    """A broker whose exchange answers the read-backs of one order in turn."""

    def __init__(self, answers):
        self.answers, self.sleeps = list(answers), []
        self.ex = self

    def fetch_order(self, oid, symbol, params=None):
        return self.answers.pop(0)

    def read(self, fn):
        return fn()

    def sleep(self, s):
        self.sleeps.append(s)


def test_bybit_a_market_order_is_read_back_until_it_is_no_longer_open_a_limit_one_at_once():
    broker = _Reading([{"type": "market", "status": "open"}, {"type": "market", "status": "closed", "filled": 1}])
    assert BYBIT.placed(broker, {"id": "7"}, "BTC/USDT:USDT", False)["status"] == "closed"
    assert broker.sleeps == [0.2]
    resting = _Reading([{"type": "limit", "status": "open"}])
    assert BYBIT.placed(resting, {"id": "8"}, "BTC/USDT:USDT", False)["status"] == "open" and resting.sleeps == []
    assert BYBIT.placed(_Reading([]), {"id": "9"}, "BTC/USDT:USDT", True) == {"id": "9"}  # conditional: ids only
    assert BINANCE.placed(_Reading([]), {"id": "1", "status": "closed"}, "BTC/USDT:USDT", False)["status"] == "closed"


def test_bybit_hedge_mode_is_refused_one_way_passes_binance_is_not_asked():
    one_way = [{"symbol": "BTC/USDT:USDT", "info": {"positionIdx": 0}}]
    hedged = [{"symbol": "BTC/USDT:USDT", "info": {"positionIdx": 1}},
              {"symbol": "BTC/USDT:USDT", "info": {"positionIdx": 2}}]
    assert BYBIT.position_mode_refusal(one_way) is None and BYBIT.position_mode_refusal([]) is None
    line = BYBIT.position_mode_refusal(hedged)
    assert "hedge mode" in line and "BTC/USDT:USDT" in line and "\n" not in line
    assert BINANCE.position_mode_refusal(hedged) is None
