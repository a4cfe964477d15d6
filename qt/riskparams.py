"""``risk:`` of ``params.yaml``: every limit and rule the one RiskEngine and the decision core apply,
in backtest, paper and live alike (``executor.core``, ``executor.risk``, ``executor.rules``).

Each rule that refuses an entry has a reason code in the decision log; the README's risk section
lists them with their keys. Rules whose key is ``None`` (or 0 for windows) are off.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RiskParams(_Frozen):
    """Limits the one RiskEngine enforces in backtest, paper and live."""

    starting_equity_usdt: float = Field(10_000.0, gt=0)
    position_fraction: float = Field(0.2, gt=0.0, le=1.0)  # of equity per new position (its MARGIN on perps)
    max_position_notional_usdt: float = Field(5_000.0, gt=0)
    max_open_positions: int = Field(4, ge=1)
    max_gross_exposure: float = Field(1.0, gt=0.0, le=50.0)  # gross notional / equity
    min_notional_usdt: float = Field(10.0, ge=0.0)
    cooldown_bars: int = Field(0, ge=0)  # after an exit, wait before re-entering that symbol
    # Protective levels: a percentage of the entry fill price, or (``*_atr``) a multiple of the ATR at
    # the decision bar (the feature ``atr_{atr_period}`` the signal carries). One kind per level.
    stop_loss_pct: float = Field(0.03, gt=0.0, lt=1.0)
    take_profit_pct: float = Field(0.06, gt=0.0, lt=10.0)
    stop_loss_atr: float | None = Field(None, gt=0.0, le=100.0)
    take_profit_atr: float | None = Field(None, gt=0.0, le=100.0)
    atr_period: int = Field(14, ge=2)
    # Take-profit ladder: [[fraction of the position, level], ...], levels in take_profit_ladder_unit
    # ("pct" of the entry fill price, or "atr" multiples). Each rung is its own reduce-only order.
    # The fractions sum to at most 1; what is left rides to the stop, max holding or a flip.
    take_profit_ladder: list[tuple[float, float]] = Field(default_factory=list)
    take_profit_ladder_unit: Literal["pct", "atr"] = "pct"
    breakeven_after_first_tp: bool = False  # after the first rung fills, the stop moves to the entry price
    max_holding_bars: int = Field(24, ge=1)
    daily_loss_limit_pct: float = Field(0.05, gt=0.0, lt=1.0)
    max_drawdown_pct: float = Field(0.25, gt=0.0, lt=1.0)  # kill switch: HALTED past this
    exit_on_signal_flip: bool = True
    # Shorts (perpetuals only): a sell signal while flat opens a short. A spot symbol cannot short.
    allow_short: bool = False
    # Perpetuals: leverage (notional = margin x leverage), per-symbol overrides, and the margin mode
    # set on the exchange and read back before the first entry (executor.live.leverage). Isolated by
    # default: a position can lose its own margin only, never the whole wallet (cross would put it all
    # behind every position).
    leverage: int = Field(1, ge=1, le=125)
    leverage_by_symbol: dict[str, int] = Field(default_factory=dict)
    margin_mode: Literal["cross", "isolated"] = "isolated"
    # LIQUIDATION_BEFORE_STOP: the stop must lie between the entry and the liquidation price, and
    # at least this fraction of the entry-to-liquidation distance away from the liquidation price.
    liquidation_buffer: float = Field(0.1, ge=0.0, lt=1.0)
    # MARGIN_GUARD: margin left available after an entry must stay >= this fraction of equity.
    min_free_margin_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    # CORRELATION_CAP: symbols whose return correlation (last correlation_lookback_bars closes, bars
    # <= t) exceeds correlation_threshold form a cluster; its net same-direction notional / equity
    # may not exceed max_cluster_exposure. NET_EXPOSURE: |long - short notional| / equity cap.
    max_cluster_exposure: float | None = Field(None, gt=0.0, le=50.0)
    correlation_threshold: float = Field(0.8, gt=-1.0, lt=1.0)
    correlation_lookback_bars: int = Field(168, ge=3, le=10_000)
    max_net_exposure: float | None = Field(None, ge=0.0, le=50.0)
    # FUNDING_FILTER: no long when the last settled funding rate is above this, no short below -this.
    max_entry_funding_rate: float | None = Field(None, ge=0.0)
    # SIGNAL_DEGENERATE (model supervisor): over the signals of the last supervisor_window_bars bars,
    # more than supervisor_max_one_side of them buy (or sell), or the probabilities' standard
    # deviation below supervisor_min_prob_std, halts new entries until the window is healthy. 0 = off.
    supervisor_window_bars: int = Field(0, ge=0, le=100_000)
    supervisor_max_one_side: float = Field(0.9, gt=0.0, le=1.0)
    supervisor_min_prob_std: float = Field(0.0, ge=0.0, lt=0.5)
    # Entries (executor.paper / executor.live.broker): "market" fills at the next open; "limit"
    # rests at close x (1 -/+ limit_offset_bps / 10 000) for limit_ttl_bars bars, then is cancelled.
    entry_order: Literal["market", "limit"] = "market"
    limit_offset_bps: float = Field(0.0, ge=0.0, lt=10_000.0)
    limit_ttl_bars: int = Field(1, ge=1)
    # Trailing stop (qt.fills): peak x (1 - pct) beside the fixed stop (a short: trough x (1 + pct)); 0 = off.
    # native: the exchange's TRAILING_STOP_MARKET (callbackRate = pct x 100, 0.1..10 %, step 0.1);
    # managed: the executor moves its STOP_MARKET each bar close.
    trailing_stop_pct: float = Field(0.0, ge=0.0, lt=1.0)
    trailing_mode: Literal["native", "managed"] = "native"
    # Sizing (executor.sizing): "fixed_fraction" uses position_fraction x equity; "volatility_target"
    # equity x vol_target_annual / the symbol's annualised volatility over vol_lookback_bars one-bar
    # returns; "confidence" position_fraction x how far the probability lies beyond its threshold.
    # Each is capped at position_fraction.
    sizing: Literal["fixed_fraction", "volatility_target", "confidence"] = "fixed_fraction"
    vol_target_annual: float = Field(0.15, gt=0.0, le=5.0)
    vol_lookback_bars: int = Field(168, ge=2, le=10_000)

    def leverage_of(self, symbol: str) -> int:
        """The leverage of ``symbol``: 1 for spot, the override or ``leverage`` for a perpetual."""
        if ":" not in symbol:
            return 1
        return self.leverage_by_symbol.get(symbol, self.leverage)

    @property
    def uses_atr(self) -> bool:
        return (self.stop_loss_atr is not None or self.take_profit_atr is not None
                or (bool(self.take_profit_ladder) and self.take_profit_ladder_unit == "atr"))

    @model_validator(mode="after")
    def _check_levels(self) -> "RiskParams":
        explicit = self.model_fields_set
        for level in ("stop_loss", "take_profit"):
            if getattr(self, f"{level}_atr") is not None and f"{level}_pct" in explicit:
                raise ValueError(f"risk.{level}_pct and risk.{level}_atr are both set; keep one kind of level")
        if self.take_profit_ladder:
            if "take_profit_pct" in explicit or self.take_profit_atr is not None:
                raise ValueError("risk.take_profit_ladder replaces the single take-profit; remove "
                                 "risk.take_profit_pct / risk.take_profit_atr")
            for fraction, level in self.take_profit_ladder:
                if not (0.0 < fraction <= 1.0 and level > 0.0):
                    raise ValueError(f"risk.take_profit_ladder rung {[fraction, level]}: the fraction must lie in "
                                     f"(0, 1] and the level be > 0")
            if sum(f for f, _ in self.take_profit_ladder) > 1.0 + 1e-9:
                raise ValueError("risk.take_profit_ladder: the fractions sum to more than the whole position")
        elif self.breakeven_after_first_tp:
            raise ValueError("risk.breakeven_after_first_tp needs risk.take_profit_ladder (it acts on the first rung)")
        for sym, lev in self.leverage_by_symbol.items():
            if ":" not in sym:
                raise ValueError(f"risk.leverage_by_symbol: {sym} is a spot symbol; leverage is for perpetuals "
                                 f"(BASE/USDT:USDT)")
            if not 1 <= lev <= 125:
                raise ValueError(f"risk.leverage_by_symbol: {sym}: leverage {lev} outside 1..125")
        return self

    @model_validator(mode="after")
    def _check_trailing(self) -> "RiskParams":
        pct = self.trailing_stop_pct
        if pct > 0 and self.trailing_mode == "native":
            tenths = pct * 1000.0  # Binance's callbackRate is a percent in steps of 0.1
            if not 1.0 - 1e-9 <= tenths <= 100.0 + 1e-9 or abs(tenths - round(tenths)) > 1e-6:
                raise ValueError(f"risk.trailing_stop_pct {pct} cannot be a native Binance trailing stop "
                                 f"(callbackRate 0.1..10 % in steps of 0.1 %, i.e. 0.001..0.1 in steps of 0.001); "
                                 f"use such a value or risk.trailing_mode: managed")
        return self
