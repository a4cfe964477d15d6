"""The feature families ``qt ablate`` can switch on and off: ``name -> FeatureParams override``.

Why a plain mapping: a family is exactly the ``features.*`` settings that turn it on, so a new
family (alt data: ``fng``, ``onchain``, ``etf``, ``headlines``, ...) joins with one line here and
nothing else changes. "Off" is derived, not listed: every key of the override set to its empty
value (``False`` for a switch, ``[]`` for a list of windows, ``None`` for an optional), which is
what every optional family's default is - so the ablation's "without" arm is the base params with
the family off even when params.yaml had it on.
"""

from __future__ import annotations

from pydantic import ValidationError

from qt.config import FeatureParams
from qt.errors import ConfigError, UserError

FAMILIES: dict[str, dict] = {
    "candle_shape": {"candle_shape": True},
    "htf": {"htf": [{"base_timeframe": "1h", "timeframe": "4h", "rsi": [14], "atr": [14], "log_return": [1, 6]}]},
    "funding": {"funding_last": True, "funding_mean": [3, 21]},
    "basis": {"basis": True},
    "cross": {"cross": [24]},
    "xv": {"xv": True, "xv_z": [24]},
    # alternative data (``features.alt_features``): daily F&G and on-chain values, ETF flows, headlines
    "fng": {"fng": True, "fng_change": [1, 7], "fng_z": [30]},
    "onchain": {"onchain": True},
    "etf_flow": {"etf_flow_z": [20]},
    "news": {"news_hours": [24]},
    # the symbol's recorded order book at each bar close (``features.book_bars``; needs recordings)
    "book": {"book": True},
}


def off_value(value):
    """The empty value of a family setting: what "this family is off" means for it."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (list, tuple)):
        return []
    return None


def family_arms(base: FeatureParams, name: str, families: dict[str, dict] | None = None,
                ) -> tuple[FeatureParams, FeatureParams]:
    """(without, with): ``base`` with family ``name`` off, and on. UserError (one line) naming the
    known families for an unknown name; ConfigError when FeatureParams refuses the combination."""
    known = FAMILIES if families is None else families
    if name not in known:
        raise UserError(f"--family {name!r} is not a known feature family; choose from {', '.join(sorted(known))}")
    on = known[name]
    raw = base.model_dump(mode="json")
    try:
        without = FeatureParams.model_validate({**raw, **{k: off_value(v) for k, v in on.items()}})
        with_ = FeatureParams.model_validate({**raw, **on})
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"feature family {name!r} refused: features.{'.'.join(map(str, first['loc']))}: "
                          f"{first['msg']}") from None
    return without, with_
