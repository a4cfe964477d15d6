"""The declared feature set's sanity checks, shared by ``feature_columns`` and ``warmup_bars``:
a module of their own so ``features.compute`` stays one screenful of formulas per family."""

from __future__ import annotations

from features.alt_features import check_alt_params
from features.cross_venue import check_xv_params
from features.htf import check_htf_block
from qt.config import FeatureParams
from qt.errors import ConfigError


def check_params(params: FeatureParams) -> None:
    """ConfigError (one line) naming the first malformed key of the declared feature set."""
    for name in ("rsi", "ema", "sma", "atr", "log_return", "realised_vol", "volume_z", "adx", "obv_z",
                 "vwap_dist", "funding_mean", "cross", "xv_z"):
        periods = list(getattr(params, name))
        low = 1 if name in ("log_return", "vwap_dist", "funding_mean") else 2
        for p in periods:
            if p < low:
                raise ConfigError(f"features.{name}: period {p} is below {low}; use periods >= {low}")
        if len(set(periods)) != len(periods):
            raise ConfigError(f"features.{name}: a period is listed twice ({periods}); list each once")
    fast, slow, signal = params.macd
    if not (2 <= fast < slow and signal >= 2):
        raise ConfigError(f"features.macd: need 2 <= fast < slow and signal >= 2, got {params.macd}")
    if params.bbands[0] < 2 or params.bbands[1] <= 0:
        raise ConfigError(f"features.bbands: need period >= 2 and k > 0, got {params.bbands}")
    if params.stoch[0] < 1 or min(params.stoch[1:]) < 1:
        raise ConfigError(f"features.stoch: need K, D, S >= 1, got {params.stoch}")
    for i, block in enumerate(params.htf):
        check_htf_block(block, i)
    for problem in (check_xv_params(params), check_alt_params(params)):
        if problem:
            raise ConfigError(problem)
