"""Builders for the live-executor tests: a hand-made perpetual market served by the real local
exchange, a signal service, and a trader wired to both (no logic under test lives here).

The market (``BTC/USDT:USDT``, 1h bars from 2024-01-01) sits at 30 000 with a 0.1 % range, so no
protective order is touched, except the bars in ``WIDE_BARS``, which trade 10 % above and below:
far enough for the default stop (-3 %) and take-profit (+6 %) at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ccxt
import pandas as pd

from exchange import LocalExchange, make_ccxt, write_datadir

SYMBOL = "BTC/USDT:USDT"
MARKET_ID = "BTCUSDT"
T0 = pd.Timestamp("2024-01-01", tz="UTC")
HOUR_MS = 3_600_000
PRICE = 30_000.0
N_BARS = 400
WIDE_BARS = (51, 151)  # bar indexes that touch both -10 % and +10 %
API_KEY, API_SECRET = "live-test-key", "live-test-secret"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def bar_ms(i: int) -> int:
    return int(T0.value // 1_000_000) + i * HOUR_MS


def candles() -> pd.DataFrame:
    ts = pd.date_range(T0, periods=N_BARS, freq="1h", tz="UTC")
    high = [PRICE * (1.10 if i in WIDE_BARS else 1.001) for i in range(N_BARS)]
    low = [PRICE * (0.90 if i in WIDE_BARS else 0.999) for i in range(N_BARS)]
    return pd.DataFrame({"symbol": SYMBOL, "timestamp": ts, "open": PRICE, "high": high, "low": low,
                         "close": PRICE, "volume": 1_000.0})


def write_market(root: Path) -> Path:
    funding = pd.DataFrame({"symbol": SYMBOL, "timestamp": pd.date_range(T0, periods=N_BARS // 8, freq="8h",
                                                                         tz="UTC"), "funding_rate": 0.0})
    write_datadir(candles(), root, "1h", funding=funding)
    return root


def buy_signals(n_bars: int = N_BARS) -> pd.DataFrame:
    """A ``buy`` for each of the first ``n_bars`` bars (FakeSignalService answers the newest one <= as_of)."""
    ts = pd.date_range(T0, periods=n_bars, freq="1h", tz="UTC")
    return pd.DataFrame({"symbol": SYMBOL, "timestamp": ts, "action": "buy", "confidence": 0.8,
                         "expected_return": 0.001, "model_version": "7"})


def client(venue: LocalExchange, timeout_ms: int = 10_000) -> ccxt.Exchange:
    c = make_ccxt("perp", venue.url, timeout_ms=timeout_ms, api_key=API_KEY, secret=API_SECRET)
    c.load_markets()
    return c


def start_exchange(root: Path) -> LocalExchange:
    return LocalExchange(root, now=T0.isoformat(), api_keys={API_KEY: API_SECRET}).start()


def daemon_argv(venue_url: str, service_url: str, poll_seconds: float = 0.1, symbols: str = SYMBOL,
                extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "cli.main", "execute", "--mode", "testnet", "--exchange-url", venue_url,
            "--service-url", service_url, "--symbols", symbols, "--poll-seconds", str(poll_seconds), *extra]


def start_daemon(venue_url: str, service_url: str, home: Path, log_path: Path, symbols: str = SYMBOL,
                 extra: tuple[str, ...] = (), **env) -> subprocess.Popen:
    """``qt execute --mode testnet`` as a real process (its own session, so it is killed alone)."""
    e = {**os.environ, "QT_HOME": str(home), "QT_API_KEY": API_KEY, "QT_API_SECRET": API_SECRET,
         "QT_LOG_LEVEL": "WARNING", **env}
    e.pop("QT_PARAMS", None) if "QT_PARAMS" not in env else None
    e.pop("REDIS_URL", None) if "REDIS_URL" not in env else None
    log = open(log_path, "ab")
    return subprocess.Popen(daemon_argv(venue_url, service_url, symbols=symbols, extra=extra), stdout=log,
                            stderr=subprocess.STDOUT, env=e, cwd=PROJECT_ROOT, start_new_session=True)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    """Poll ``predicate`` until it holds; fail with the daemon's log when ``timeout_s`` passes or ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text() if log else ''}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{log.read_text() if log else ''}")


def kill_9(proc: subprocess.Popen | None) -> None:
    """SIGKILL to a daemon's own process group (its pid: ``start_daemon`` gives it a new session), if still running."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ---- spot (issue #7: spot live trading, OCO protection) -------------------------------------------
SPOT_SYMBOL = "BTC/USDT"
TP_BAR = 201  # trades 10 % above (the take-profit), nothing below
GAP_BAR = 251  # opens 5 % lower (through a 3 % stop) and stays there for the bar


def spot_candles() -> pd.DataFrame:
    """The perpetual's calm/wide bars for spot ``BTC/USDT``, plus ``TP_BAR`` and ``GAP_BAR``."""
    df = candles().assign(symbol=SPOT_SYMBOL)
    df.loc[TP_BAR, "high"] = PRICE * 1.10
    df.loc[GAP_BAR, ["open", "high", "low", "close"]] = [PRICE * 0.95, PRICE * 0.951, PRICE * 0.94, PRICE * 0.95]
    return df


def write_spot_market(root: Path) -> Path:
    write_datadir(spot_candles(), root, "1h")
    return root


def spot_client(venue: LocalExchange, timeout_ms: int = 10_000) -> ccxt.Exchange:
    c = make_ccxt("spot", venue.url, timeout_ms=timeout_ms, api_key=API_KEY, secret=API_SECRET)
    c.load_markets()
    return c


def oco_lists(venue: LocalExchange) -> list[tuple]:
    """(list client id, qty, stop price, limit price) of every open spot OCO list."""
    c = spot_client(venue)
    out = []
    for lst in c.private_get_openorderlist():
        legs = [c.fetch_order(str(o["orderId"]), SPOT_SYMBOL)["info"] for o in lst["orders"]]
        stop = next(leg for leg in legs if leg["type"] == "STOP_LOSS")
        limit = next(leg for leg in legs if leg["type"] == "LIMIT_MAKER")
        out.append((lst["listClientOrderId"], float(stop["origQty"]), float(stop["stopPrice"]),
                    float(limit["price"])))
    return out


def bars_frame(rows: list[tuple[float, float, float, float]], symbol: str = SYMBOL) -> pd.DataFrame:
    """Hourly candles of ``symbol`` from T0, one ``(open, high, low, close)`` per bar."""
    return pd.DataFrame({"symbol": symbol, "timestamp": pd.date_range(T0, periods=len(rows), freq="1h", tz="UTC"),
                         "open": [r[0] for r in rows], "high": [r[1] for r in rows], "low": [r[2] for r in rows],
                         "close": [r[3] for r in rows], "volume": 1_000.0})


def calm_bars(n_bars: int, special: dict[int, tuple[float, float, float, float]],
              price: float = PRICE) -> pd.DataFrame:
    """``bars_frame`` at ``price`` with a 0.1 % range, except the bars in ``special``."""
    return bars_frame([special.get(i, (price, price * 1.001, price * 0.999, price)) for i in range(n_bars)])


@contextmanager
def serving_market(root: Path, candles_frame: pd.DataFrame, funding_rate: float = 0.0) -> Iterator[LocalExchange]:
    """Write ``candles_frame`` to ``root`` with a funding event of ``funding_rate`` every 8 h per
    symbol, and serve it with a local exchange for one test module (stopped whatever happens)."""
    last = candles_frame["timestamp"].max()
    stamps = pd.date_range(T0, last, freq="8h", tz="UTC")
    funding = pd.concat([pd.DataFrame({"symbol": s, "timestamp": stamps, "funding_rate": funding_rate})
                         for s in sorted(candles_frame["symbol"].unique())], ignore_index=True)
    write_datadir(candles_frame, root, "1h", funding=funding)
    with running_exchange(root) as ex:
        yield ex


@contextmanager
def serving_spot_market(root: Path, candles_frame: pd.DataFrame) -> Iterator[LocalExchange]:
    """Write the spot ``candles_frame`` to ``root`` and serve it with a local exchange for one test module."""
    write_datadir(candles_frame, root, "1h")
    with running_exchange(root) as ex:
        yield ex


@contextmanager
def running_exchange(root: Path) -> Iterator[LocalExchange]:
    """A local exchange serving ``root`` for one test module, stopped whatever happens."""
    ex = start_exchange(root)
    try:
        yield ex
    finally:
        ex.stop()


@contextmanager
def trader_factory(make_client: Callable[..., ccxt.Exchange], signals: pd.DataFrame, symbol: str, db: Path,
                   namespace: str, symbols: list[str] | None = None, base_risk: dict | None = None):
    """``make(timeout_ms=None, **risk)``: a started LiveTrader on ``symbol`` (or ``symbols``) with
    ``base_risk`` updated by ``risk``, its client ``make_client()`` (``make_client(timeout_ms)`` when a
    timeout is given), fed by one signal service serving ``signals``; every trader is closed and the
    service stopped at the end."""
    from executor.live.trader import LiveTrader
    from executor.signals import HttpSignalSource
    from tests.executor.exec_support import FakeSignalService, params

    made = []
    with FakeSignalService(signals) as svc:
        def make(timeout_ms: int | None = None, **risk) -> LiveTrader:
            p = params(data={"symbols": symbols or [symbol]}, risk={**(base_risk or {}), **risk})
            ex = make_client() if timeout_ms is None else make_client(timeout_ms)
            trader = LiveTrader(p, ex, HttpSignalSource(svc.url, timeout_s=5), db, namespace, sleep=time.sleep)
            made.append(trader)
            trader.start()
            return trader

        try:
            yield make
        finally:
            for t in made:
                t.close()


# ---- Bybit USDT perpetuals (issue #19: the same broker through ccxt bybit) --------------------------
BYBIT_RESET = "/_qt/bybit"  # the Bybit account's control prefix on the local exchange


def write_bybit_market(root: Path, candles_frame: pd.DataFrame | None = None, funding_rate: float = 0.0) -> Path:
    """``candles_frame`` (default: ``candles()``) as Bybit's last-trade and mark-price 1h candles
    (``ohlcv/bybit``) with a funding event every 8 h (``funding/bybit``), the layout the local
    exchange's v5 routes serve."""
    frame = candles() if candles_frame is None else candles_frame
    folder, funding_folder = root / "ohlcv" / "bybit", root / "funding" / "bybit"
    folder.mkdir(parents=True, exist_ok=True)
    funding_folder.mkdir(parents=True, exist_ok=True)
    for symbol, group in frame.groupby("symbol"):
        stem = str(symbol).split(":")[0].replace("/", "_")
        ohlcv = group[["timestamp", "open", "high", "low", "close", "volume"]].reset_index(drop=True)
        ohlcv["timestamp"] = pd.to_datetime(ohlcv["timestamp"], utc=True).astype("datetime64[ms, UTC]")
        ohlcv.to_parquet(folder / f"{stem}-1h.parquet", index=False)
        ohlcv.drop(columns="volume").to_parquet(folder / f"{stem}-1h-mark.parquet", index=False)
        stamps = pd.date_range(ohlcv["timestamp"].iloc[0], ohlcv["timestamp"].iloc[-1], freq="8h", tz="UTC")
        pd.DataFrame({"timestamp": stamps.astype("datetime64[ms, UTC]"), "funding_rate": funding_rate}) \
            .to_parquet(funding_folder / f"{stem}-funding.parquet", index=False)
    return root


def bybit_client(venue: LocalExchange, timeout_ms: int = 10_000) -> ccxt.Exchange:
    """The client ``qt execute --venue bybit`` builds (``qt.venues.make_client``), markets loaded."""
    from qt.venues import make_client

    c = make_client("bybit", "perp", venue.url, timeout_ms=timeout_ms, api_key=API_KEY, secret=API_SECRET)
    c.load_markets()
    return c


def reset_bybit(venue: LocalExchange, **kwargs) -> dict:
    """A fresh Bybit account (10 000 USDT unless ``futures_usdt`` says otherwise)."""
    return venue.reset_account(**{"futures_usdt": 10_000, **kwargs}, prefix=BYBIT_RESET)


def bybit_account(venue: LocalExchange) -> dict:
    return venue._control("GET", f"{BYBIT_RESET}/account")


def bybit_daemon_params(root: Path, execute: dict | None = None, **risk) -> Path:
    """A params file for a ``qt execute --venue bybit`` daemon: the local Bybit account is cross
    margined (account-wide, read back, never switched by the executor), so ``risk.margin_mode: cross``;
    ``execute`` (e.g. ``{"venue": "bybit"}``: the default venue) when given."""
    import yaml

    path = root / "bybit-params.yaml"
    sections = {"risk": {"margin_mode": "cross", **risk}, **({"execute": execute} if execute else {})}
    path.write_text(yaml.safe_dump(sections))
    return path
