"""The pure decisions behind the exchange: fault draws, visibility, filters, number format,
and the client's URL rewrite (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from qt.errors import ConfigError
from qt.binance import make_ccxt, rewrite_api_urls
from exchange.datadir import Bars
from exchange.faults import FaultInjector, parse_fault_config
from exchange.views import KlineSource, derive_filters, format_number, visible_window


def _decisions(config: dict, requests: list[tuple[str, str | None]]) -> list[str | None]:
    injector = FaultInjector(parse_fault_config(config))
    return [injector.decide(path, symbol).kind for path, symbol in requests]


def test_same_seed_gives_the_same_faults_and_another_seed_other_ones():
    requests = [("/api/v3/klines", "BTCUSDT")] * 200
    config = {"seed": 1, "rules": [{"kind": "503", "probability": 0.3}]}
    first = _decisions(config, requests)
    assert first == _decisions(config, requests)
    assert first != _decisions({**config, "seed": 2}, requests)
    assert 0.2 < first.count("503") / len(first) < 0.4  # ~ the configured probability


def test_draws_depend_on_the_rules_own_ordinal_not_on_other_traffic():
    config = {"seed": 5, "rules": [{"kind": "429", "symbol": "BTCUSDT", "probability": 0.5}]}
    alone = _decisions(config, [("/api/v3/klines", "BTCUSDT")] * 50)
    mixed = _decisions(config, [("/api/v3/klines", s) for _ in range(50) for s in ("ETHUSDT", "BTCUSDT")])
    assert mixed[1::2] == alone and set(mixed[0::2]) == {None}


def test_first_matching_rule_decides_and_counters_follow():
    injector = FaultInjector(parse_fault_config({"rules": [
        {"kind": "418", "path_prefix": "/fapi", "first_k": 1},
        {"kind": "502", "path_prefix": "/fapi/v1/klines"}]}))
    kinds = [injector.decide("/fapi/v1/klines", "BTCUSDT").kind for _ in range(3)]
    assert kinds == ["418", "502", "502"]
    report = injector.report()
    assert report["injected"]["418"] == 1 and report["injected"]["502"] == 2
    assert report["rules"] == [{"matched": 3, "injected": 1}, {"matched": 3, "injected": 2}]


@pytest.mark.parametrize("bad, key", [
    ({"rules": [{"kind": "429", "probability": 1.5}]}, "probability"),
    ({"rules": [{"kind": "429", "probability": 0.5, "every_nth": 2}]}, "rules.0"),
    ({"latency": 5}, "latency"),
    ('{"rules": [', "(top level)"),
])
def test_bad_fault_config_names_the_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        parse_fault_config(bad)


def _bars(ts: list[int]) -> Bars:
    x = np.arange(1, len(ts) + 1, dtype=float)
    return Bars(np.array(ts, dtype=np.int64), x, x + 1, x - 0.5, x + 0.5, x * 10)


def test_window_skips_gaps_like_binance_and_hides_the_future():
    hour = 3_600_000
    source = KlineSource(_bars([0, hour, 5 * hour, 6 * hour, 7 * hour]), None, hour)
    assert visible_window(source, 6 * hour + 1, None, None, 3).ts_ms.tolist() == [hour, 5 * hour, 6 * hour]
    assert visible_window(source, 6 * hour + 1, 2 * hour, None, 10).ts_ms.tolist() == [5 * hour, 6 * hour]
    assert visible_window(source, 10 * hour, None, 5 * hour, 2).ts_ms.tolist() == [hour, 5 * hour]


@pytest.mark.parametrize("price, tick, step", [
    (30_000.0, "0.01", "0.00001"), (2_000.0, "0.001", "0.0001"), (0.5, "0.0000001", "1"), (25.0, "0.00001", "0.01")])
def test_filters_follow_the_price_level(price, tick, step):
    f = derive_filters(price)
    assert (f.tick_size, f.step_size) == (tick, step)
    assert f.price_decimals == len(tick.split(".")[1]) if "." in tick else f.price_decimals == 0


@pytest.mark.parametrize("value", [0.1 + 0.2, 1e-7, 93576.0, 123456789.123, 2.5e-05, 1e17])
def test_numbers_round_trip_without_exponent(value):
    text = format_number(value)
    assert "e" not in text.lower() and float(text) == value


def test_every_ccxt_api_url_is_moved_to_the_local_host_with_its_path():
    for market in ("spot", "perp"):
        client = make_ccxt(market, "http://127.0.0.1:9")
        urls = client.urls["api"]
        assert len(urls) > 20 and all(u.startswith("http://127.0.0.1:9/") for u in urls.values())
        assert urls["public"] == "http://127.0.0.1:9/api/v3"
        assert urls["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
        assert urls["fapiData"] == "http://127.0.0.1:9/futures/data"
    assert "binance.com" in make_ccxt("spot", None).urls["api"]["public"]  # real Binance when no URL
    with pytest.raises(ConfigError, match="must not carry a path"):
        rewrite_api_urls({"public": "https://api.binance.com/api/v3"}, "http://127.0.0.1:9/api")


def test_written_data_dir_is_served_and_a_rewrite_is_picked_up(tmp_path):
    import pandas as pd

    from qt.config import SyntheticParams
    from qt.errors import DataError
    from exchange import DataDir, write_datadir
    from data.synthetic import generate_market

    write_datadir(generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=300), seed=1), tmp_path, "1h")
    data = DataDir(tmp_path)
    market = data.markets("spot")["BTCUSDT"]
    assert len(data.bars(market, "1h")) == 300
    write_datadir(generate_market(["BTC/USDT"], "1h", SyntheticParams(bars=400), seed=1), tmp_path, "1h")
    assert len(data.bars(market, "1h")) == 400  # cache keyed by mtime: never served stale
    assert not [p for p in tmp_path.rglob(".*")]  # no temp files left behind
    with pytest.raises(DataError, match="only perpetuals"):
        write_datadir(generate_market(["ETH/USDT"], "1h", SyntheticParams(bars=300), seed=1), tmp_path, "1h",
                      funding=pd.DataFrame({"symbol": ["ETH/USDT"], "timestamp": [pd.Timestamp("2023-01-01", tz="UTC")],
                                            "funding_rate": [0.0001]}))
    assert "ETHUSDT" not in DataDir(tmp_path).markets("spot")  # refused input writes nothing
