"""One corrupt file in a ``parquet:DIR`` source refuses only its own symbol.

The directory holds one clean and one corrupt file (duplicated timestamps), written here with plain
pandas in the ``../shared/data`` layout. The local exchange keeps serving the clean symbol and answers
the bad one with Binance's -1121 whose message names the file and the problem; ``qt collect`` stores the
clean symbol and then fails in one line naming the bad symbol and why.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from data import lake
from data.sources import lake_root
from qt.config import load_params
from qt.paths import StatePaths

QT = str(Path(sys.executable).with_name("qt"))
BARS = 300
START = pd.Timestamp("2024-01-01", tz="UTC")


def _candles(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"timestamp": pd.date_range(START, periods=n, freq="1h").astype("datetime64[ms, UTC]"),
                         "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": rng.uniform(1, 10, n)})


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    folder = src / "ohlcv" / "binance"
    folder.mkdir(parents=True)
    _candles(BARS, 1).to_parquet(folder / "GOOD_USDT-1h.parquet", index=False)
    bad = _candles(BARS, 2)
    bad = pd.concat([bad, bad.iloc[[10, 11]]]).sort_values("timestamp", kind="stable").reset_index(drop=True)
    bad.to_parquet(folder / "BAD_USDT-1h.parquet", index=False)
    return src


def test_bad_file_refuses_only_its_symbol_at_the_exchange(source):
    from exchange import LocalExchange

    with LocalExchange(source, now="2024-03-01T00:00:00") as ex:
        info = httpx.get(f"{ex.url}/api/v3/exchangeInfo", timeout=10)
        assert info.status_code == 200, info.text
        assert [s["symbol"] for s in info.json()["symbols"]] == ["GOODUSDT"]
        bad = httpx.get(f"{ex.url}/api/v3/exchangeInfo", params={"symbol": "BADUSDT"}, timeout=10)
        assert bad.status_code == 400
        body = bad.json()
        assert body["code"] == -1121 and "BAD_USDT-1h.parquet" in body["msg"] and "duplicated" in body["msg"]
        assert "\n" not in body["msg"]
        kl = httpx.get(f"{ex.url}/api/v3/klines", params={"symbol": "BADUSDT", "interval": "1h"}, timeout=10)
        assert kl.status_code == 400 and kl.json()["code"] == -1121 and "BAD_USDT-1h.parquet" in kl.json()["msg"]
        good = httpx.get(f"{ex.url}/api/v3/klines", params={"symbol": "GOODUSDT", "interval": "1h", "limit": 5},
                         timeout=10)
        assert good.status_code == 200 and len(good.json()) == 5


def test_bad_file_collect_stores_the_clean_symbol_and_fails_naming_the_bad_one(source, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "QT_HOME": str(home)}
    env.pop("QT_PARAMS", None)
    res = subprocess.run([QT, "collect", "--source", f"parquet:{source}", "--symbols", "GOOD/USDT,BAD/USDT",
                          "--start", "2024-01-01", "--end", "2024-01-10"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "BAD/USDT" in errors[0] and "BAD_USDT-1h.parquet" in errors[0] and "duplicated" in errors[0]
    assert "cannot reach" not in res.stderr and "Traceback" not in res.stderr
    params = load_params(None, {"data": {"source": f"parquet:{source}", "symbols": ["GOOD/USDT", "BAD/USDT"],
                                         "start": "2024-01-01", "end": "2024-01-10"}})
    root = lake_root(params, StatePaths(home))
    expected = _candles(BARS, 1)
    expected = expected[expected["timestamp"] < pd.Timestamp("2024-01-10", tz="UTC")]
    stored = lake.read_symbol(root, "GOOD/USDT", "1h")
    assert len(stored) == len(expected)
    np.testing.assert_allclose(stored["close"].to_numpy(), expected["close"].to_numpy())
    assert not list(root.rglob("*BAD*"))
    failures = json.loads((home / "reports" / "collect-failures.json").read_text())
    assert "BAD/USDT" in json.dumps(failures)
