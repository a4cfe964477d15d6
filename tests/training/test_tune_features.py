"""Which feature sets a search computes for its ``features.*`` dimensions (pure: no data read)."""

from __future__ import annotations

import pytest

from features.compute import feature_columns
from qt.config import load_params
from qt.errors import ConfigError
from training.tune_features import feature_variants


def _params(*space):
    return load_params(None, {"tune": {"space": list(space)}})


def _union(params) -> set[str]:
    return set(feature_columns(params.features)).union(*(feature_columns(v) for v in feature_variants(
        params.features, params.tune)))


def test_no_features_dimension_computes_nothing():
    params = _params({"path": "train.xgboost.max_depth", "kind": "int", "low": 2, "high": 6})
    assert feature_variants(params.features, params.tune) == []


def test_every_choice_and_every_combination_is_covered():
    params = _params({"path": "features.cross", "kind": "categorical", "choices": [[], [24]]},
                     {"path": "features.cross_reference", "kind": "categorical", "choices": ["BTC/USDT", "ETH/USDT"]},
                     {"path": "features.candle_shape", "kind": "categorical", "choices": [False, True]})
    union = _union(params)
    # the ETH columns exist only in the combination cross [24] x ETH/USDT
    assert {"btc_logret_24", "eth_logret_24", "corr_eth_24", "body_frac"} <= union
    variants = feature_variants(params.features, params.tune)
    assert params.features not in variants and len(variants) == len({v.model_dump_json() for v in variants})
    # fewest changes first: single families before their combinations
    changed = [(v.cross != params.features.cross) + (v.cross_reference != params.features.cross_reference)
               + (v.candle_shape != params.features.candle_shape) for v in variants]
    assert changed == sorted(changed)


@pytest.mark.parametrize("dim, fragment", [
    ({"path": "features.warmup_memories", "kind": "float", "low": 10, "high": 20}, "must be categorical"),
    ({"path": "features.cross", "kind": "categorical", "choices": [[], [1]]}, "period 1 is below 2"),
    ({"path": "features.stoch", "kind": "categorical", "choices": [[14, 3]]}, "features.stoch"),
])
def test_a_features_dimension_that_cannot_be_computed_is_one_line(dim, fragment):
    from training.tune import check_space

    params = _params(dim)
    with pytest.raises(ConfigError) as err:
        check_space(params, params.tune)
        feature_variants(params.features, params.tune)  # what load_tune_data computes first
    assert fragment in str(err.value) and "\n" not in str(err.value)
