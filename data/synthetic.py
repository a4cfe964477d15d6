"""The project's own market generator: deterministic per seed, offline, realistic enough.

Stylised facts it reproduces (each a knob in ``SyntheticParams``):

* **volatility clustering** - GARCH(1,1) variance per symbol;
* **fat tails** - Student-t(4) innovations scaled to unit variance;
* **regime switches** - a two-state Markov chain (calm / turbulent, x2.5 volatility);
* **cross-symbol correlation** - one market factor with weight ``correlation``;
* **volume** - log-normal, rising with the absolute return and in turbulent regimes.

**Planted predictable component** (the positive control). The drift of bar t+1 is
``signal_strength * sigma_t * tanh(m_t)`` where ``m_t`` is the symbol's own log return
over the last ``signal_lookback_bars`` bars divided by ``sigma_t * sqrt(lookback)``:
trend-following momentum that is observable at the close of bar t from past prices
only. ``signal_strength = 0`` gives a pure (GARCH, fat-tailed) random walk with no
learnable drift: the negative control.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qt.config import SyntheticParams
from qt.timeframes import timeframe_ms

_START_PRICES = {"BTC": 30_000.0, "ETH": 2_000.0, "BNB": 300.0, "SOL": 25.0, "XRP": 0.5,
                 "ADA": 0.35, "DOGE": 0.08, "LTC": 90.0}


def generate_market(symbols: list[str], timeframe: str, params: SyntheticParams, seed: int) -> pd.DataFrame:
    """Candles for ``symbols``: columns symbol, timestamp (open time, UTC ms), OHLCV."""
    rng = np.random.default_rng(seed)
    n, k = params.bars, len(symbols)
    step = timeframe_ms(timeframe)
    start_ms = int(pd.Timestamp(params.start, tz="UTC").value // 1_000_000)
    ts = pd.to_datetime(start_ms + step * np.arange(n), unit="ms", utc=True).astype("datetime64[ms, UTC]")

    # regimes: calm (0) / turbulent (1), sticky
    regime = np.zeros(n, dtype=np.int8)
    p_stay = (0.995, 0.98)
    for t in range(1, n):
        stay = rng.random() < p_stay[regime[t - 1]]
        regime[t] = regime[t - 1] if stay else 1 - regime[t - 1]
    regime_vol = np.where(regime == 1, 2.5, 1.0)

    def t4(shape):  # Student-t(4) scaled to unit variance (var of t4 = 2)
        return rng.standard_t(4, size=shape) / np.sqrt(2.0)

    market = t4(n)
    idio = t4((n, k))
    rho = params.correlation
    z = np.sqrt(rho) * market[:, None] + np.sqrt(1.0 - rho) * idio

    base_var = params.base_volatility ** 2
    omega, alpha, beta = base_var * 0.05, 0.08, 0.87
    L = params.signal_lookback_bars
    logret = np.zeros((n, k))
    sigma = np.zeros((n, k))
    var = np.full(k, base_var)
    for t in range(n):
        sigma[t] = np.sqrt(var) * regime_vol[t]
        drift = np.zeros(k)
        if params.signal_strength > 0 and t > L:
            past = logret[t - L:t].sum(axis=0)
            m = past / (sigma[t - 1] * np.sqrt(L))
            drift = params.signal_strength * sigma[t - 1] * np.tanh(m)
        logret[t] = drift + sigma[t] * z[t]
        shock = (logret[t] - drift) / regime_vol[t]
        var = omega + alpha * shock ** 2 + beta * var

    frames = []
    for j, sym in enumerate(symbols):
        base = sym.split("/")[0]
        p0 = _START_PRICES.get(base, 10.0 + 90.0 * rng.random())
        close = p0 * np.exp(np.cumsum(logret[:, j]))
        open_ = np.concatenate([[p0], close[:-1]])
        wick = np.abs(rng.normal(0.0, 0.5, size=(n, 2))) * sigma[:, j:j + 1]
        high = np.maximum(open_, close) * np.exp(wick[:, 0])
        low = np.minimum(open_, close) * np.exp(-wick[:, 1])
        vol_base = 1_000_000.0 / p0
        volume = vol_base * np.exp(rng.normal(0.0, 0.3, n)) * (1.0 + 40.0 * np.abs(logret[:, j])) * regime_vol
        frames.append(pd.DataFrame({"symbol": sym, "timestamp": ts, "open": open_, "high": high,
                                    "low": low, "close": close, "volume": volume}))
    return pd.concat(frames, ignore_index=True)
