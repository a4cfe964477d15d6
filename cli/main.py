"""``qt``: one command per pipeline stage, ``qt run`` for all of them.

A user's mistake (bad option, bad params.yaml, missing data) prints one line and
exits 2; nothing is written. Bugs keep their traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.context import load_context, params_with_alt_series
from qt.errors import QTError, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantum Trader: collect, validate, features, train, evaluate, promote, serve, execute.")

SourceOpt = Annotated[Optional[str], typer.Option("--source", help="synthetic[:SEED] | parquet:DIR | ccxt")]
SymbolsOpt = Annotated[Optional[str], typer.Option("--symbols", help="comma-separated, e.g. BTC/USDT,ETH/USDT")]
TimeframeOpt = Annotated[Optional[str], typer.Option("--timeframe", help="1m, 5m, 15m, 1h, 4h, 1d")]
StartOpt = Annotated[Optional[str], typer.Option("--start", help="first date, inclusive (YYYY-MM-DD)")]
EndOpt = Annotated[Optional[str], typer.Option("--end", help="last date, exclusive (YYYY-MM-DD)")]
ExchangeUrlOpt = Annotated[Optional[str], typer.Option(
    "--exchange-url", help="with --source ccxt: a Binance-compatible server, e.g. http://127.0.0.1:8900")]
ExchangeOpt = Annotated[Optional[str], typer.Option(
    "--exchange", help="the venue collected from, by ccxt id: binance | binanceusdm | bybit (collect.exchange)")]
ParamsOpt = Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")]


def _run_stage(name: str, params_path, source, symbols, timeframe, start, end, exchange_url=None,
               exchange=None, alt: str | None = None) -> None:
    params, paths = load_context(params_path, source, symbols, timeframe, start, end, exchange_url, exchange)
    if alt is not None:  # --alt: the alt series to collect beside the candles (alt.series)
        params = params_with_alt_series(params, alt)
    if name == "collect" and params.runner.task_runner == "dask":  # Dask needs the Prefect flow
        from flows.collect import collection_flow

        result = collection_flow(params, str(paths.home))
    elif name in ("validate", "features") and params.runner.task_runner == "dask":
        from flows.stage_tasks import symbol_stages_flow

        result = symbol_stages_flow(params, str(paths.home), stages=[name])
    else:
        from flows import stages as pipeline

        result = getattr(pipeline, name)(params, paths)
    typer.echo(json.dumps(result, indent=2, default=str))
    quarantined = (result.get("validation", {}).get("quarantined_symbols", [])
                   + result.get("validation", {}).get("quarantined_alt", [])) if name == "validate" else None
    if quarantined:
        raise QTError(f"quarantined by validation: {', '.join(quarantined)} "
                      f"(see {paths.reports / 'validation.md'}); they are left out of later stages")


def _stage_command(name: str, doc: str):
    def command(params: ParamsOpt = None, source: SourceOpt = None, symbols: SymbolsOpt = None,
                timeframe: TimeframeOpt = None, start: StartOpt = None, end: EndOpt = None,
                exchange_url: ExchangeUrlOpt = None) -> None:
        _run_stage(name, params, source, symbols, timeframe, start, end, exchange_url)

    command.__doc__ = doc
    app.command(name)(command)


@app.command("collect")
def collect_command(params: ParamsOpt = None, source: SourceOpt = None, symbols: SymbolsOpt = None,
                    timeframe: TimeframeOpt = None, start: StartOpt = None, end: EndOpt = None,
                    exchange_url: ExchangeUrlOpt = None, exchange: ExchangeOpt = None,
                    alt: Annotated[Optional[str], typer.Option(
                        "--alt", help="alt series to collect too, comma-separated: fear_greed,onchain_btc,headlines "
                                      "(alt.series; '' = none)")] = None) -> None:
    """Bring candles from the source into the raw lake (from collect.exchange: Binance, or Bybit's perpetuals)."""
    _run_stage("collect", params, source, symbols, timeframe, start, end, exchange_url, exchange, alt)



_stage_command("validate", "Validate the collected candles (Great Expectations); errors stop here.")
_stage_command("features", "Compute features and labels from validated candles into Parquet.")
_stage_command("train", "Walk-forward train XGBoost and LightGBM and the ensemble; log to MLflow.")
_stage_command("evaluate", "Backtest the holdout net of costs beside buy-and-hold and the RSI/MACD rule.")
_stage_command("promote", "Register the version; move the champion alias only if every gate passes.")


@app.command("run")
def run(params: ParamsOpt = None, source: SourceOpt = None, symbols: SymbolsOpt = None,
        timeframe: TimeframeOpt = None, start: StartOpt = None, end: EndOpt = None,
        exchange_url: ExchangeUrlOpt = None) -> None:
    """Run every stage (Prefect flow), serve the champion, replay the holdout in paper mode."""
    p, paths = load_context(params, source, symbols, timeframe, start, end, exchange_url)
    from flows.pipeline import run_all
    from cli.report import print_summary

    summary = run_all(p, paths, redis_url=os.environ.get("REDIS_URL"))
    print_summary(summary, paths)
    from cli.report import parity_failure

    failure = parity_failure(summary)
    if failure:  # summary.json is written; the run still fails (exit 1): it is not a user mistake
        raise QTError(failure)


@app.command("serve")
def serve(port: Annotated[Optional[int], typer.Option("--port", min=1024, max=65535)] = None,
          params: ParamsOpt = None) -> None:
    """Run `bentoml serve` on the champion until interrupted."""
    p, paths = load_context(params, None, None, None, None, None)
    import time

    from flows.stages import write_effective_params
    from serving.launcher import ServiceProcess

    with ServiceProcess(paths, params_path=write_effective_params(p, paths),
                        port=port or p.serving.port) as service:
        typer.echo(f"serving {p.train.model_name}@champion on {service.url} (Ctrl-C to stop); "
                   f"log: {paths.logs / f'serving-{service.port}.log'}")
        try:
            while service.process.alive():
                time.sleep(1.0)
        except KeyboardInterrupt:
            return
        raise QTError(f"bentoml serve exited; log tail:\n{service.log_tail()}")


@app.command("execute")
def execute(mode: Annotated[str, typer.Option("--mode", help="paper | testnet | live")] = "paper",
            service_url: Annotated[Optional[str], typer.Option("--service-url")] = None,
            params: ParamsOpt = None, start: StartOpt = None, end: EndOpt = None,
            symbols: SymbolsOpt = None,
            exchange_url: Annotated[Optional[str], typer.Option(
                "--exchange-url", help="testnet: a Binance-compatible server (e.g. the local exchange) "
                                       "instead of Binance's sandbox")] = None,
            i_understand_live: Annotated[bool, typer.Option(
                "--i-understand-live", help="required by --mode live: real orders on the venue's mainnet")] = False,
            venue: Annotated[Optional[str], typer.Option(
                "--venue", help="testnet/live: binance | binanceusdm | bybit (Bybit: USDT perpetuals only); "
                                "default execute.venue")] = None,
            poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.05)] = 5.0,
            max_bars: Annotated[Optional[int], typer.Option("--max-bars", min=1, help="stop after N bars")] = None,
            executor_id: Annotated[str, typer.Option(
                "--executor-id", help="names this executor's client order ids; keep it across restarts")] = "qt",
            metrics_port: Annotated[Optional[int], typer.Option(
                "--metrics-port", min=0, max=65535,
                help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics while running")] = None,
            ) -> None:
    """Run the executor. Paper mode replays the collected bars from --start (default: the holdout);
    testnet/live trade USDT-M perpetuals or spot through ccxt on --venue (keys from QT_API_KEY / QT_API_SECRET)."""
    if mode not in ("paper", "testnet", "live"):
        raise UserError(f"--mode {mode!r} is not one of paper, testnet, live")
    if mode != "paper":
        _execute_live(mode, service_url, params, symbols, exchange_url, i_understand_live, poll_seconds,
                      max_bars, executor_id, metrics_port, venue)
        return
    p, paths = load_context(params, None, symbols, None, None, end)
    import pandas as pd

    from executor.daemon import run_paper_replay
    from executor.signals import HttpSignalSource
    from data.sources import read_lake
    from flows.stages import holdout_start

    url = service_url or f"http://127.0.0.1:{p.serving.port}"
    first = pd.Timestamp(start, tz="UTC") if start else holdout_start(paths)
    from flows.stages import only_validated

    from data.lake import read_lake_funding
    from data.sources import lake_root

    p = only_validated(p, paths)
    funding = read_lake_funding(lake_root(p, paths), p.data.symbols)  # perps pay funding; None without perps
    report = run_paper_replay(read_lake(p, paths), HttpSignalSource(url, timeout_s=10.0), p,
                              state_db=paths.executor_db, redis_url=os.environ.get("REDIS_URL"), start=first,
                              funding=funding, metrics_port=metrics_port)
    typer.echo(json.dumps(report.to_dict(), indent=2, default=str))


def _execute_live(mode, service_url, params, symbols, exchange_url, i_understand_live, poll_seconds, max_bars,
                  executor_id, metrics_port=None, venue=None) -> None:
    """testnet: ccxt sandbox (or --exchange-url); live: mainnet, only with --i-understand-live.
    The keys are read here from the environment and go only to the ccxt client."""
    from qt.venues import VENUES

    if venue is not None and venue not in VENUES:
        raise UserError(f"--venue {venue!r} is not one of {', '.join(VENUES)}")
    if mode == "live" and not i_understand_live:
        raise UserError("--mode live sends real orders to the venue's mainnet; confirm with --i-understand-live "
                        "(keys in QT_API_KEY / QT_API_SECRET), or use --mode paper / --mode testnet first")
    if mode == "live" and exchange_url is not None:
        raise UserError("--exchange-url is for --mode testnet; --mode live always trades on the venue itself")
    if exchange_url is not None and not exchange_url.startswith(("http://", "https://")):
        raise UserError(f"--exchange-url {exchange_url!r} must be an http(s) URL, e.g. http://127.0.0.1:8900")
    from qt.live_guard import refuse_production_url_for_testnet

    refuse_production_url_for_testnet(exchange_url)  # before keys are read or any client is built
    key, secret = os.environ.get("QT_API_KEY"), os.environ.get("QT_API_SECRET")
    if not key or not secret:
        raise UserError(f"--mode {mode} needs the exchange API key and secret in the environment variables "
                        f"QT_API_KEY and QT_API_SECRET (never on the command line)")
    p, paths = load_context(params, None, symbols, None, None, None)
    from executor.daemon import run_live
    from executor.signals import HttpSignalSource
    from executor.live.trader import check_live_universe
    from qt.venues import make_client, venue_for

    venue = venue or p.execute.venue
    market = check_live_universe(p.data.symbols, risk=p.risk)  # spot -> ccxt binance, perpetuals -> binanceusdm
    if market not in venue_for(venue).markets:
        raise UserError(f"--venue {venue} trades USDT perpetuals only (BASE/USDT:USDT); "
                        f"{', '.join(p.data.symbols)} {'is' if len(p.data.symbols) == 1 else 'are'} {market}")
    exchange = make_client(venue, market, exchange_url.rstrip("/") if exchange_url else None,
                           timeout_ms=p.collect.timeout_ms, api_key=key, secret=secret)
    exchange.options["recvWindow"] = 5_000  # Binance's and Bybit's default: after it a late request is refused, so a
    # look-up after a timed-out order is final that much sooner
    if mode == "testnet" and exchange_url is None:
        try:
            exchange.set_sandbox_mode(True)
        except Exception as exc:  # noqa: BLE001 - ccxt raises NotSupported for a venue without a sandbox
            raise UserError(f"ccxt has no sandbox for {exchange.id} ({type(exc).__name__}); "
                            f"pass --exchange-url for a test exchange") from None
    url = service_url or f"http://127.0.0.1:{p.serving.port}"
    summary = run_live(p, exchange, HttpSignalSource(url, timeout_s=10.0), paths.executor_db,
                       namespace=f"{executor_id}-{mode}", redis_url=os.environ.get("REDIS_URL"),
                       poll_interval_s=poll_seconds, max_bars=max_bars, secrets=(key, secret),
                       metrics_port=metrics_port)
    typer.echo(json.dumps(summary, indent=2, default=str))


from cli.backtest import backtest as _backtest  # noqa: E402  (sub-commands register after app exists)
from cli.models import models_app  # noqa: E402

app.add_typer(models_app, name="models")
app.command("backtest")(_backtest)
from cli.drift import drift as _drift  # noqa: E402

app.command("drift")(_drift)
from cli.tune import tune as _tune  # noqa: E402

app.command("tune")(_tune)
from cli.ablate import ablate as _ablate  # noqa: E402

app.command("ablate")(_ablate)
from cli.xv import xv_app  # noqa: E402
from cli.book import record_book as _record_book  # noqa: E402

app.command("record-book")(_record_book)

app.add_typer(xv_app, name="xv")


def _kill_switch_client():
    """The executors' Redis (REDIS_URL) for ``qt kill`` / ``qt resume``; one-line errors."""
    url = os.environ.get("REDIS_URL")
    if not url:
        raise UserError("REDIS_URL is not set: the kill switch lives in the Redis the executor uses "
                        "(e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise UserError(f"Redis at {url} is unreachable ({type(exc).__name__}); the kill switch is unchanged") from None
    return client, url


@app.command("kill")
def kill(reason: Annotated[str, typer.Option("--reason", help="why (recorded in the key)")] = "manual",
         by: Annotated[Optional[str], typer.Option("--by", help="who (default: login)")] = None) -> None:
    """Set the kill switch: every executor on REDIS_URL halts new entries at its next bar (exits go on)."""
    from executor.events import set_kill_switch
    from cli.models import login

    client, url = _kill_switch_client()
    value = set_kill_switch(client, reason=reason, by=by or login())
    typer.echo(f"kill switch ON on {url}: {json.dumps(value)}")


@app.command("resume")
def resume() -> None:
    """Clear the kill switch: executors halted by it trade again from their next bar."""
    from executor.events import clear_kill_switch

    client, url = _kill_switch_client()
    typer.echo(f"kill switch cleared on {url}" if clear_kill_switch(client) else f"kill switch was not set on {url}")


@app.command("dashboard")
def dashboard(host: Annotated[str, typer.Option("--host", help="bind address (loopback by default)")] = "127.0.0.1",
              port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8050,
              refresh_seconds: Annotated[float, typer.Option("--refresh-seconds", min=0.5)] = 5.0,
              service_url: Annotated[Optional[str], typer.Option("--service-url")] = None,
              params: ParamsOpt = None) -> None:
    """Serve the trader's dashboard (state DB, Redis, MLflow, lake) until Ctrl-C."""
    p, paths = load_context(params, None, None, None, None, None)
    from dashboard.server import serve
    from dashboard.snapshot import Sources

    sources = Sources(p, paths, os.environ.get("REDIS_URL"), service_url or f"http://127.0.0.1:{p.serving.port}")
    try:
        serve(sources, host, port, refresh_seconds, on_ready=lambda url: typer.echo(f"dashboard on {url}", err=True))
    except OSError as exc:
        raise UserError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        return

exchange_app = typer.Typer(no_args_is_help=True, help="The local Binance-compatible exchange (offline and tests).")
app.add_typer(exchange_app, name="exchange")


@exchange_app.command("serve")
def exchange_serve(
    data: Annotated[Path, typer.Option("--data", help="Parquet directory laid out like ../shared/data")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8900,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    now: Annotated[Optional[str], typer.Option("--now", help="replay clock, ISO time (default: wall clock)")] = None,
    faults: Annotated[Optional[str], typer.Option("--faults", help="fault-injection config, JSON")] = None,
    book: Annotated[Optional[Path], typer.Option(
        "--book", help="levels.parquet (or a directory of them, from qt record-book): "
                       "market orders walk that book instead of filling at the bar close")] = None,
    params: Annotated[Optional[Path], typer.Option(
        "--params", help="params file whose costs.fill_model: book + costs.book choose the book (--book wins); "
                         "without it, none is read")] = None,
) -> None:
    """Serve candles and funding from DIR over Binance's REST API until Ctrl-C."""
    from exchange import run_server_cli
    from qt.config import load_params

    costs = load_params(params).costs if params is not None else None
    run_server_cli(data, port, host=host, now=now, faults_json=faults, book=book, costs=costs)


def _exit_on_sigterm(signum, _frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `with` block stops the processes it started."""
    raise SystemExit(128 + signum)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=os.environ.get("QT_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()  # standalone: click reports usage errors itself (exit 2)
    except UserError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except QTError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)

if __name__ == "__main__":
    main()
