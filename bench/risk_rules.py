"""Decision + risk latency with every rule of issue 16 on (``make bench``, section ``risk_rules``).

2024 1h candles and funding of the five USDT-M perpetuals ../shared/data holds (BTC, ETH, ADA,
LTC, XRP), a fixed-seed random signal stream (buy / sell each with probability ``P_SIDE`` per
symbol-bar, uniform probabilities, the feature code's ``atr_14`` on every signal) through the SAME
instrumented backtest as the ``executor`` section (``bench.executor.latency``: ``decide`` +
``RiskEngine.check`` timed where the loop calls them), twice in one run:

* ``rules_off``: shorts and leverage only (the reference);
* ``all_rules``: plus the correlation cap (and net exposure), funding filter, model supervisor,
  margin guard, liquidation check, confidence sizing, ATR stop and an ATR take-profit ladder with
  break-even.

Reported: p50 / p99 / max per signal in microseconds for both, the ratio all_rules / rules_off
(the machine's noise cancels in it), and how often each rule refused. Target: p99 < 1000 us.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYMBOLS = [f"{b}/USDT:USDT" for b in ("BTC", "ETH", "ADA", "LTC", "XRP")]
START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC")
WARMUP = pd.Timedelta(days=14)  # atr_14's warm-up before the first signal
SEED, P_SIDE = 11, 0.03
TARGET_P99_US = 1000.0
# random signals lose money: without a wider drawdown halt the year would be HALTED within weeks and
# the rules would hardly be asked (a HALTED refusal is the cheapest check there is)
RULES = {"allow_short": True, "leverage": 5, "max_gross_exposure": 5.0, "max_position_notional_usdt": 1e6,
         "max_open_positions": 5, "max_drawdown_pct": 0.99, "daily_loss_limit_pct": 0.99, "position_fraction": 0.05}
ALL_RULES = {**RULES, "margin_mode": "isolated", "max_cluster_exposure": 0.5, "correlation_threshold": 0.6,
             "correlation_lookback_bars": 168, "max_net_exposure": 2.0, "max_entry_funding_rate": 0.0003,
             "supervisor_window_bars": 24, "supervisor_max_one_side": 0.9, "supervisor_min_prob_std": 0.01,
             "min_free_margin_fraction": 0.2, "liquidation_buffer": 0.1, "sizing": "confidence",
             "stop_loss_atr": 2.0, "take_profit_ladder_unit": "atr",
             "take_profit_ladder": [[0.5, 2.0], [0.5, 4.0]], "breakeven_after_first_tp": True}


def _market() -> tuple[pd.DataFrame, pd.DataFrame]:
    candles, funding = [], []
    for sym in SYMBOLS:
        stem = sym.split("/")[0] + "_USDT"
        c = pd.read_parquet(SHARED / "ohlcv" / "binanceusdm" / f"{stem}-1h.parquet")
        candles.append(c[(c["timestamp"] >= START - WARMUP) & (c["timestamp"] < END)].assign(symbol=sym))
        f = pd.read_parquet(SHARED / "funding" / "binanceusdm" / f"{stem}-funding.parquet")
        funding.append(f[(f["timestamp"] >= START - WARMUP) & (f["timestamp"] < END + pd.Timedelta(days=1))]
                       .assign(symbol=sym))
    cols = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
    return pd.concat(candles, ignore_index=True)[cols], pd.concat(funding, ignore_index=True)


def _signals(candles: pd.DataFrame) -> pd.DataFrame:
    from features.compute import compute_features
    from qt.config import FeatureParams

    feats = compute_features(candles, FeatureParams())[["symbol", "timestamp", "atr_14"]]
    bars = feats[feats["timestamp"] >= START].sort_values(["symbol", "timestamp"], kind="stable")
    rng = np.random.default_rng(SEED)
    u = rng.random(len(bars))
    action = np.where(u < P_SIDE, "buy", np.where(u > 1.0 - P_SIDE, "sell", "hold"))
    prob = np.where(action == "buy", 0.55 + 0.45 * rng.random(len(bars)),
                    np.where(action == "sell", 0.45 * rng.random(len(bars)), 0.46 + 0.08 * rng.random(len(bars))))
    return pd.DataFrame({"symbol": bars["symbol"].to_numpy(), "timestamp": bars["timestamp"].to_numpy(),
                         "action": action.astype(object), "confidence": prob, "expected_return": 0.0,
                         "model_version": f"random_seed_{SEED}", "atr": bars["atr_14"].to_numpy()})


def run() -> dict:
    from bench.executor import latency
    from executor.backtest import run_backtest
    from qt.config import load_params

    if not (SHARED / "ohlcv" / "binanceusdm").is_dir():
        return {"skipped": "../shared/data absent"}
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    wide, funding = _market()
    signals = _signals(wide)
    candles = wide[wide["timestamp"] >= START].reset_index(drop=True)
    out: dict = {}
    for name, risk in (("rules_off", RULES), ("all_rules", ALL_RULES)):
        params = load_params(overrides={"data": {"symbols": SYMBOLS}, "risk": risk})
        out[name] = latency(candles, signals, params, funding=funding)
        res = run_backtest(candles, signals, params, funding=funding)
        denied = res.decisions[res.decisions["outcome"] == "denied"]["reason"].value_counts()
        out[name]["denied_by_reason"] = {str(k): int(v) for k, v in denied.items()}
        out[name]["entries"] = {side: int(n) for side, n in
                                res.fills[res.fills["purpose"] == "entry"]["side"].value_counts().items()}
    p99 = out["all_rules"]["p99_us"]
    return {
        "symbols": SYMBOLS, "timeframe": "1h", "year": 2024, "signals": int(len(signals)),
        "signal_actions": {str(k): int(v) for k, v in signals["action"].value_counts().items()},
        **out,
        "p99_ratio_all_rules_over_rules_off": round(p99 / out["rules_off"]["p99_us"], 2),
        "all_rules_p99_us": p99, "target_p99_us": TARGET_P99_US, "within_target": p99 < TARGET_P99_US,
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "section_seconds": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
