"""The local exchange's test-control surface (``/_qt/...``, never faulted, never signed).

    GET  /_qt/clock     {"now_ms", "fixed", "synced_ms"}
    POST /_qt/clock     {"advance_bars": N, "interval": "1h"} | {"advance_ms": X} | {"to": ISO or ms}
                        moves a replay clock (started with --now) forward and matches the resting
                        orders against every bar opened on the way; answers {"now_ms", "bars_offered"}.
                        Moving backwards is refused while orders are open or positions held.
    POST /_qt/reset     {"spot": {"USDT": "10000"}, "futures": {"USDT": "10000"},
                         "fees": {"spot_maker": "0.001", ...}, "max_fill_qty_per_bar": {"BTCUSDT": "0.5"}}
                        a fresh account: these balances, no orders, positions or trades (every key
                        optional; defaults 10 000 USDT spot and futures, Binance's base fee tier,
                        no liquidity cap).
    POST /_qt/liquidity {"max_fill_qty_per_bar": {"BTCUSDT": "0.02"}} changes the per-bar liquidity cap
                        of the running account (orders, balances and positions kept), e.g. so that
                        an exit fills only in part after an entry filled in full; {} removes every cap.
    GET  /_qt/account   the raw account (balances, wallet, positions, order and trade counts) for tests.
    /_qt/bybit/reset, /_qt/bybit/account, /_qt/bybit/liquidity: the same for the Bybit v5 account
                        (``exchange.bybit.trading``; its own wallet, orders and positions, the same clock).

A bad body is answered 400 ``{"code": -1130, "msg": ...}`` with one line naming the key.
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qt.errors import ConfigError
from qt.timeframes import TIMEFRAME_MS
from exchange.orders import FeeRates
from exchange.shapes import num
from exchange.trading import DEFAULT_FUTURES_WALLET, DEFAULT_SPOT_BALANCES, TradingVenue



class ClockMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_bars: int | None = Field(None, ge=0)
    interval: str = "1h"
    advance_ms: int | None = Field(None, ge=0)
    to: str | int | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ClockMove":
        given = [k for k in ("advance_bars", "advance_ms", "to") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of advance_bars, advance_ms, to")
        if self.interval not in TIMEFRAME_MS:
            raise ValueError(f"interval must be one of {sorted(TIMEFRAME_MS)}")
        return self

    def target_ms(self, now_ms: int) -> int:
        if self.advance_bars is not None:
            return now_ms + self.advance_bars * TIMEFRAME_MS[self.interval]
        if self.advance_ms is not None:
            return now_ms + self.advance_ms
        if isinstance(self.to, int):
            return self.to
        ts = pd.Timestamp(self.to)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return int(ts.value // 1_000_000)


class LiquidityChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_fill_qty_per_bar: dict[str, Decimal] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sane(self) -> "LiquidityChange":
        if any(v < 0 for v in self.max_fill_qty_per_bar.values()):
            raise ValueError("caps must be >= 0")
        return self


class AccountReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spot: dict[str, Decimal] = Field(default_factory=lambda: dict(DEFAULT_SPOT_BALANCES))
    futures: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": DEFAULT_FUTURES_WALLET})
    fees: dict[str, Decimal] = Field(default_factory=dict)
    max_fill_qty_per_bar: dict[str, Decimal] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sane(self) -> "AccountReset":
        if set(self.futures) - {"USDT"}:
            raise ValueError("futures: only a USDT wallet is simulated")
        unknown = set(self.fees) - set(FeeRates.__dataclass_fields__)
        if unknown:
            raise ValueError(f"fees: unknown {sorted(unknown)}; use {sorted(FeeRates.__dataclass_fields__)}")
        values = [*self.spot.values(), *self.futures.values(), *self.fees.values(), *self.max_fill_qty_per_bar.values()]
        if any(v < 0 for v in values):
            raise ValueError("balances, fees and caps must be >= 0")
        return self


def _error(message: str, status: int = 400):
    return Response(json.dumps({"code": -1130, "msg": message}), status_code=status, media_type="application/json")


def _parse(model, body: bytes):
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise ConfigError(f"{key}: {first['msg']}") from None


def control_routes(venue: TradingVenue, clock, others: tuple[TradingVenue, ...] = ()) -> list:
    """The clock routes and ``venue``'s account routes under ``/_qt``. A clock move matches the
    resting orders of ``venue`` and of ``others`` (the Bybit account) on every bar on the way,
    and a move backwards is refused while any of them has orders open or positions held."""
    def ok(payload) -> Response:
        return Response(json.dumps(payload), media_type="application/json")

    venues = (venue, *others)

    async def get_clock(_request: Request) -> Response:
        return ok({"now_ms": clock.now_ms(), "fixed": clock.fixed_ms is not None, "synced_ms": venue.synced_ms})

    def _move(move: ClockMove) -> dict:
        with contextlib.ExitStack() as locks:
            for v in venues:
                locks.enter_context(v.lock)
            now = clock.now_ms()
            target = move.target_ms(now)
            busy = any(v.engine.symbols_with_open_orders() or v.engine.futures.open_symbols() for v in venues)
            if target < now and busy:
                raise ConfigError("the clock cannot move backwards while orders are open or positions held; "
                                  "POST /_qt/reset (and /_qt/bybit/reset) first")
            clock.move_to(target)
            if target < now:
                for v in venues:
                    v.synced_ms = target
            return {"now_ms": target, "bars_offered": sum(v.sync(target) for v in venues)}

    async def post_clock(request: Request) -> Response:
        try:
            move = _parse(ClockMove, await request.body())
            return ok(await run_in_threadpool(_move, move))
        except (ConfigError, ValueError) as err:
            return _error(str(err))

    return [Route("/_qt/clock", get_clock, methods=["GET"]), Route("/_qt/clock", post_clock, methods=["POST"]),
            *account_control_routes(venue, clock, "/_qt")]


def account_control_routes(venue: TradingVenue, clock, prefix: str) -> list:
    """``{prefix}/reset``, ``/account``, ``/liquidity`` of one venue's account (Binance's under
    ``/_qt``, Bybit's under ``/_qt/bybit``: separate accounts, one clock)."""
    def ok(payload) -> Response:
        return Response(json.dumps(payload), media_type="application/json")

    async def post_reset(request: Request) -> Response:
        try:
            reset = _parse(AccountReset, await request.body())
        except ConfigError as err:
            return _error(str(err))
        fees = FeeRates(**{k: v for k, v in reset.fees.items()})
        venue.reset(dict(reset.spot), reset.futures.get("USDT", Decimal(0)), fees, dict(reset.max_fill_qty_per_bar))
        return ok({"reset": True, "now_ms": clock.now_ms()})

    async def post_liquidity(request: Request) -> Response:
        try:
            change = _parse(LiquidityChange, await request.body())
        except ConfigError as err:
            return _error(str(err))
        with venue.lock:
            venue.engine.max_fill_qty_per_bar = dict(change.max_fill_qty_per_bar)
        return ok({"max_fill_qty_per_bar": {k: num(v) for k, v in change.max_fill_qty_per_bar.items()}})

    async def get_account(_request: Request) -> Response:
        with venue.lock:
            venue.sync(clock.now_ms())  # a venue other than Binance's is not synced by a clock move
            e = venue.engine
            return ok({
                "spot": {a: {"free": num(e.spot.free_of(a)), "locked": num(e.spot.locked_of(a))}
                         for a in e.spot.assets()},
                "futures": {"wallet": num(e.futures.wallet),
                            "positions": {s: {"amount": num(p.amount), "entry": num(p.entry),
                                              "isolated_wallet": num(p.isolated_wallet)}
                                          for s, p in e.futures.positions.items() if p.amount},
                            "leverage": dict(e.futures.leverage), "margin_type": dict(e.futures.margin_type)},
                "orders": len(e.orders), "algo_orders": len(e.algo_orders), "trades": len(e.trades),
            })

    return [Route(f"{prefix}/reset", post_reset, methods=["POST"]), Route(f"{prefix}/account", get_account, methods=["GET"]),
            Route(f"{prefix}/liquidity", post_liquidity, methods=["POST"])]
