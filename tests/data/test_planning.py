"""Pure planning: which ranges to request, where the gaps are, which symbols make the universe."""

import numpy as np
import pytest

from data.collector import align_up_ms, closed_end_ms, find_gaps, plan_fetch_ranges, rank_universe, subtract_known
from qt.config import CollectParams

H = 3_600_000


@pytest.mark.parametrize("start, end, first, last, checked, ranges", [
    (0, 10 * H, None, None, None, [(0, 10 * H)]),                     # nothing stored: everything
    (0, 10 * H, 0, 5 * H, 0, [(6 * H, 10 * H)]),                      # resume after the newest candle
    (0, 6 * H, 0, 5 * H, 0, []),                                      # up to date: nothing
    (0, 10 * H, 3 * H, 5 * H, 3 * H, [(0, 3 * H), (6 * H, 10 * H)]),  # earlier start never asked: the head too
    (0, 10 * H, 3 * H, 5 * H, 0, [(6 * H, 10 * H)]),                  # head asked before (listing later): not again
    (7 * H, 10 * H, 0, 5 * H, 0, [(7 * H, 10 * H)]),                  # start after the newest candle
    (5 * H, 5 * H, None, None, None, []),                             # empty request
])
def test_plan_never_requests_stored_history(start, end, first, last, checked, ranges):
    assert plan_fetch_ranges(start, end, first, last, H, checked) == ranges


def test_closed_end_excludes_the_candle_in_progress():
    assert closed_end_ms(10 * H + 1, H) == 10 * H  # the 10h candle is open: stop before it
    assert closed_end_ms(10 * H, H) == 10 * H      # at 10h sharp the 9h candle just closed
    assert align_up_ms(H + 1, H) == 2 * H and align_up_ms(H, H) == H


def test_gaps_are_missing_grid_times_and_known_ones_are_skipped():
    ts = np.array([0, 1, 2, 5, 6, 9], dtype=np.int64) * H
    assert find_gaps(ts, H) == [(3 * H, 5 * H), (7 * H, 9 * H)]
    assert find_gaps(np.array([], dtype=np.int64), H) == []
    assert subtract_known(find_gaps(ts, H), [(3 * H, 5 * H)]) == [(7 * H, 9 * H)]


def _market(base, type_="spot", quote="USDT", active=True):
    m = {"base": base, "quote": quote, "type": type_, "active": active}
    if type_ == "swap":
        m.update(linear=True, settle=quote)
    return m


def test_top_universe_filters_stablecoins_and_leveraged_tokens_and_ranks_by_volume():
    markets = {f"{b}/USDT": _market(b) for b in ("BTC", "ETH", "USDC", "FDUSD", "BTCUP", "ETHDOWN", "JUP", "SOL")}
    markets["OLD/USDT"] = _market("OLD", active=False)
    markets["ETH/BTC"] = _market("ETH", quote="BTC")
    markets["BTC/USDT:USDT"] = _market("BTC", type_="swap")
    volume = {"BTC/USDT": 9e9, "ETH/USDT": 5e9, "USDC/USDT": 8e9, "FDUSD/USDT": 7e9, "BTCUP/USDT": 6e9,
              "ETHDOWN/USDT": 6e9, "JUP/USDT": 1e8, "SOL/USDT": 2e9, "OLD/USDT": 1e12, "ETH/BTC": 1e12,
              "BTC/USDT:USDT": 1e12}
    assert rank_universe(volume, markets, CollectParams(top_n=4)) == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "JUP/USDT"]
    assert rank_universe(volume, markets, CollectParams(top_n=3, market="perp")) == ["BTC/USDT:USDT"]
