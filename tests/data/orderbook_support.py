"""Hand-made raw recording lines (``<receive ns> <JSON>``), the format of the shared recordings."""

from __future__ import annotations

import json

SYMBOL = "BTCUSDT"


def depth(ns, first, last, bids=(), asks=(), prev=None, market="binanceusdm"):
    data = {"e": "depthUpdate", "E": ns // 1_000_000, "s": SYMBOL, "U": first, "u": last,
            "b": [list(b) for b in bids], "a": [list(a) for a in asks]}
    if market == "binanceusdm":
        data["pu"] = prev
        stream = f"{SYMBOL.lower()}@depth@0ms"
    else:
        stream = f"{SYMBOL.lower()}@depth@100ms"
    return f"{ns} {json.dumps({'stream': stream, 'data': data})}"


def snapshot(ns, last_update_id, bids, asks):
    return f"{ns} {json.dumps({'lastUpdateId': last_update_id, 'bids': [list(b) for b in bids], 'asks': [list(a) for a in asks]})}"


def ticker(ns, update_id, bid, bid_qty, ask, ask_qty):
    data = {"u": update_id, "s": SYMBOL, "b": bid, "B": bid_qty, "a": ask, "A": ask_qty}
    return f"{ns} {json.dumps({'stream': f'{SYMBOL.lower()}@bookTicker', 'data': data})}"


def trade(ns, trade_id, price, qty, buyer_is_maker):
    data = {"e": "trade", "E": ns // 1_000_000, "T": ns // 1_000_000, "s": SYMBOL, "t": trade_id, "p": price,
            "q": qty, "m": buyer_is_maker}
    return f"{ns} {json.dumps({'stream': f'{SYMBOL.lower()}@trade', 'data': data})}"
