"""The project's local Binance-compatible exchange (offline stand-in for binance.com, and for Bybit v5).

* ``create_app`` / ``Clock`` (``exchange.local``): Binance's public REST endpoints over a
  Parquet data dir (``exchange.market_data``), at the wall clock or a replayed instant, plus the
  signed order, account, position and leverage endpoints (``exchange.trading``; the USDT-M
  account ones in ``exchange.futures_routes``; parameters read by ``exchange.params``) over a
  small matching engine (``exchange.matching``, the order values and filters in
  ``exchange.orders``, spot OCO lists in ``exchange.oco``, the futures account with cross and
  isolated margin in ``exchange.ledger``, liquidation of isolated positions in
  ``exchange.liquidation``), and a test-control surface (``exchange.control``). It imports nothing of the project but ``qt``.
* Bybit v5 (``exchange.bybit``), served by the same process over the same data dir, clock and
  faults, for the real ccxt ``bybit`` client and pybit: ``GET /v5/market/time``,
  ``instruments-info``, ``kline``, ``mark-price-kline``, ``funding/history``, ``tickers``,
  ``open-interest`` (USDT perpetuals, category ``linear``; files under ``ohlcv/bybit`` and
  ``funding/bybit``); signed (same API keys): ``/v5/user/query-api``, ``/v5/account/info``,
  ``/v5/asset/coin/query-info``, ``/v5/account/wallet-balance``, ``/v5/position/list``,
  ``/v5/position/set-leverage``, ``/v5/order/create|amend|cancel|realtime|history``,
  ``/v5/execution/list`` - over the one matching engine, in a Bybit account apart from the
  Binance one (``reset_account(..., prefix="/_qt/bybit")``).
* API keys: ``{"api key": "secret"}`` as JSON in the environment variable
  ``QT_EXCHANGE_API_KEYS`` of the server process (never on the command line, where ``ps``
  shows it, and never logged). Without keys every signed request is refused (-2015).
* ``FaultInjector`` (``exchange.faults``): seeded latency, 429/418/5xx, timeouts, dropped
  connections, reconfigurable at run time through ``/_qt/faults``.
* ``make_ccxt`` (``qt.binance``): the real ccxt client, optionally pointed at it.
* ``serve`` runs the server in this process (blocking); ``LocalExchange`` runs it as a real
  subprocess (``python -m exchange``) for tests and the collect stage, and stops it by PID.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from qt.config import CostParams
from qt.errors import ConfigError, QTError
from qt.binance import make_ccxt
from exchange.book_fills import BookLevels, book_source
from exchange.datadir import DataDir, write_datadir
from exchange.faults import FaultConfig, FaultInjector, parse_fault_config
from exchange.local import Clock, create_app
from qt.procs import ManagedProcess, free_port

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
API_KEYS_ENV = "QT_EXCHANGE_API_KEYS"


def parse_api_keys(raw: str | None) -> dict[str, str]:
    """``{"key": "secret", ...}`` from JSON text; ConfigError that never echoes the text."""
    if not raw:
        return {}
    try:
        keys = json.loads(raw)
    except ValueError:
        keys = None
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                             for k, v in keys.items()):
        raise ConfigError(f"{API_KEYS_ENV} must be a JSON object of non-empty strings "
                          f'{{"api key": "secret"}} (its value is not shown)')
    return keys


def serve(datadir: Path, host: str, port: int, clock: Clock, faults: FaultInjector,
          api_keys: dict[str, str] | None = None, book=None) -> None:
    """Serve the exchange on ``host:port`` until SIGINT/SIGTERM (blocking).

    In-flight requests get 1 s at shutdown: a "timeout" fault stalls for longer than any
    client waits, and must not keep a stopping server alive."""
    import uvicorn  # only the server process needs it: clients and tests import this package without it

    app = create_app(Path(datadir), clock, faults, api_keys, book)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    print(f"local Binance- and Bybit-compatible exchange on http://{host}:{port} serving {datadir}, "
          f"{len(api_keys or {})} API key(s) (Ctrl-C to stop)", flush=True)
    uvicorn.Server(config).run()


def run_server_cli(data: Path, port: int, host: str = LOOPBACK, now: str | None = None,
                   faults_json: str | None = None, api_keys: dict[str, str] | None = None,
                   book: Path | None = None, costs: CostParams | None = None) -> None:
    """``qt exchange serve --data DIR --port P [--host H] [--now ISO] [--faults JSON] [--book LEVELS]
    [--params FILE]``: without ``--book``, ``costs`` (``qt.config.CostParams`` of ``--params``) may
    choose the book (``costs.fill_model: book`` + ``costs.book``; ``exchange.book_fills.book_source``).

    API keys come from ``api_keys`` or else ``$QT_EXCHANGE_API_KEYS`` (read here, at the entry
    point). Every argument is checked before the port is bound: a bad one raises a UserError
    (ConfigError/DataError) with one line saying what to fix."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    clock = Clock.from_iso(now)
    faults = FaultInjector(parse_fault_config(faults_json))
    keys = api_keys if api_keys is not None else parse_api_keys(os.environ.get(API_KEYS_ENV))
    DataDir(Path(data))  # DataError now, not at the first request
    chosen = book_source(book, costs)
    levels = BookLevels.read(chosen[0], source=chosen[1]) if chosen is not None else None  # likewise
    serve(Path(data), host, port, clock, faults, keys, levels)


class LocalExchange:
    """The local exchange as a real subprocess on a free loopback port.

    ``with LocalExchange(data_dir, now="2024-06-01T12:30", faults={...}) as ex:`` starts
    ``python -m exchange``, waits until ``/api/v3/ping`` answers, and stops it by PID on
    exit (also when the body raises). ``ex.url`` is what ``make_ccxt`` takes. ``book=`` (a
    ``levels.parquet`` or a directory of them) makes market orders walk that book (``exchange.book_fills``).
    """

    def __init__(self, data: Path, now: str | None = None, faults: dict | FaultConfig | None = None,
                 port: int | None = None, log_path: Path | None = None, start_timeout_s: float = 30.0,
                 api_keys: dict[str, str] | None = None, book: Path | None = None):
        self.data = Path(data)
        self.port = port or free_port()
        self.now = now
        config = faults if isinstance(faults, FaultConfig) else parse_fault_config(faults)
        self._faults_json = config.model_dump_json()
        # Our own temp log is removed at stop (its tail is in any start-up error already);
        # a log_path the caller chose is kept.
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="qt-exchange-")) / "server.log"
        self.start_timeout_s = start_timeout_s
        argv = [sys.executable, "-m", "exchange", "--data", str(self.data), "--port", str(self.port),
                "--host", LOOPBACK, "--faults", self._faults_json]
        if now is not None:
            argv += ["--now", now]
        if book is not None:
            argv += ["--book", str(book)]
        env = {k: v for k, v in os.environ.items() if k != API_KEYS_ENV}
        if api_keys:
            env[API_KEYS_ENV] = json.dumps(api_keys)  # the environment, not argv: ps shows argv
        self.process = ManagedProcess(f"local exchange :{self.port}", argv, env=env, log_path=self.log_path,
                                      cwd=_PROJECT_ROOT)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> "LocalExchange":
        import httpx

        self.process.start()
        try:
            self.process.wait_until(lambda: httpx.get(f"{self.url}/api/v3/ping", timeout=1.0).status_code == 200,
                                    self.start_timeout_s, "answering /api/v3/ping")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
            try:
                self.log_path.parent.rmdir()
            except OSError:
                pass

    def set_faults(self, config: dict | FaultConfig) -> dict:
        """Replace the fault config (counters restart at zero); returns the server's report."""
        import httpx

        body = config.model_dump_json() if isinstance(config, FaultConfig) else json.dumps(config)
        response = httpx.post(f"{self.url}/_qt/faults", content=body, timeout=5.0)
        if response.status_code != 200:
            raise ConfigError(f"local exchange refused the fault config: {response.text}")
        return response.json()

    def fault_report(self) -> dict:
        """``{"config", "requests", "injected": {kind: n}, "rules": [{"matched", "injected"}]}``."""
        import httpx

        response = httpx.get(f"{self.url}/_qt/faults", timeout=5.0)
        if response.status_code != 200:
            raise QTError(f"local exchange /_qt/faults answered {response.status_code}: {response.text}")
        return response.json()

    def fault_counts(self) -> dict[str, int]:
        """Injected faults by kind since the last ``set_faults`` (or start)."""
        return self.fault_report()["injected"]

    def _control(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        response = httpx.request(method, f"{self.url}{path}", content=json.dumps(body or {}), timeout=30.0)
        if response.status_code != 200:
            raise ConfigError(f"local exchange refused {method} {path}: {response.text}")
        return response.json()

    def advance(self, bars: int = 1, interval: str = "1h") -> dict:
        """Move the replay clock ``bars`` x ``interval`` forward; resting orders are matched on
        every bar opened on the way. Returns ``{"now_ms", "bars_offered"}``."""
        return self._control("POST", "/_qt/clock", {"advance_bars": bars, "interval": interval})

    def move_clock_to(self, when: str | int) -> dict:
        return self._control("POST", "/_qt/clock", {"to": when})

    def now_ms(self) -> int:
        return self._control("GET", "/_qt/clock")["now_ms"]

    def reset_account(self, spot: dict | None = None, futures_usdt: float | str | None = None,
                      fees: dict | None = None, max_fill_qty_per_bar: dict | None = None,
                      prefix: str = "/_qt") -> dict:
        """A fresh account (no orders, positions or trades) with these balances and settings;
        ``prefix="/_qt/bybit"`` resets the Bybit v5 account instead of the Binance one."""
        body: dict = {}
        if spot is not None:
            body["spot"] = {k: str(v) for k, v in spot.items()}
        if futures_usdt is not None:
            body["futures"] = {"USDT": str(futures_usdt)}
        if fees is not None:
            body["fees"] = {k: str(v) for k, v in fees.items()}
        if max_fill_qty_per_bar is not None:
            body["max_fill_qty_per_bar"] = {k: str(v) for k, v in max_fill_qty_per_bar.items()}
        return self._control("POST", f"{prefix}/reset", body)

    def set_liquidity(self, max_fill_qty_per_bar: dict) -> dict:
        """Change the per-bar quantity cap of the running account (``{}``: no cap); nothing else changes."""
        return self._control("POST", "/_qt/liquidity",
                             {"max_fill_qty_per_bar": {k: str(v) for k, v in max_fill_qty_per_bar.items()}})

    def account_state(self) -> dict:
        """The raw account (``GET /_qt/account``): balances, positions, order and trade counts."""
        return self._control("GET", "/_qt/account")

    def __enter__(self) -> "LocalExchange":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["API_KEYS_ENV", "Clock", "DataDir", "FaultConfig", "FaultInjector", "LocalExchange", "create_app",
           "make_ccxt", "parse_api_keys", "parse_fault_config", "run_server_cli", "serve", "write_datadir"]
