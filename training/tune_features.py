"""The features a strategy search may read: the base set plus every feature choice in ``tune.space``.

A ``tune.space`` dimension on a ``features.*`` path (``features.candle_shape``, ``features.htf``,
``features.cross``, ``features.funding_last``, ``features.basis``, ...) makes a trial read columns
the materialised feature store does not hold (it has the base params' columns only). So once per
study (``training.tune.load_tune_data``) the columns of every choice are computed with the
features stage's own code - ``features.compute.compute_features``, its multi-input families fed
the funding and reference candles ``features.materialise.read_feature_inputs`` reads from the
lake, as the features stage does - and joined to the store's rows: the **union**. Each trial then
reads only its own ``training.train.member_columns`` and drops the rows where one of them is
undefined (a family's warm-up or an input that does not cover the bar yet: NaN here), so a trial
without the family trains on exactly the rows it would have without the union.

Why computing on the whole history is safe: a feature at bar t reads nothing after t (the
features' point-in-time contract), so the values before the search's cut are the same whether
or not the holdout's candles were there; the caller cuts every row at or after the cut.

Choices are combined: every combination of the features dimensions' choices is considered (a
``cross`` window named after ``cross_reference``, say), up to ``MAX_VARIANTS`` combinations, fewest
changes first, and computed only when it names a column the union lacks so far (five on/off
families cost five ``compute_features`` passes, not 31); beyond ``MAX_VARIANTS`` each dimension's
choices on their own, and a trial needing a combination's column is refused in one line
(``missing_columns``).
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from qt.config import FeatureParams, Params
from qt.errors import ConfigError, DataError
from qt.tuneparams import TuneDimension, TuneParams

log = logging.getLogger(__name__)
KEYS = ["symbol", "timestamp"]
MAX_VARIANTS = 64  # feature sets computed per study at most (each one compute_features pass)


def feature_dimensions(tune: TuneParams) -> list[TuneDimension]:
    """The dimensions of ``tune.space`` that change the feature set; ConfigError (one line) for a
    non-categorical one: the union is computed once per study, so every value must be listed."""
    dims = [d for d in tune.space if d.path.startswith("features.")]
    for dim in dims:
        if dim.kind != "categorical":
            raise ConfigError(f"tune.space {dim.path}: a features dimension must be categorical (list its choices): "
                              f"the features of every choice are computed once per study")
    return dims


def feature_variants(base: FeatureParams, tune: TuneParams) -> list[FeatureParams]:
    """The feature sets the space can produce beside ``base`` (each validated; ConfigError naming the
    dimension and choice a FeatureParams refuses), de-duplicated, ``base`` itself left out."""
    dims = feature_dimensions(tune)
    if not dims:
        return []
    if math.prod(len(d.choices) for d in dims) <= MAX_VARIANTS:
        combos = [dict(zip([d.path for d in dims], values)) for values in itertools.product(*(d.choices for d in dims))]
    else:
        log.warning("tune.space: %d features dimensions have more than %d combinations; computing each dimension's "
                    "choices on their own", len(dims), MAX_VARIANTS)
        combos = [{d.path: c} for d in dims for c in d.choices]
    # fewest changes first: a combination is then computed only when it names a column none of its
    # parts has (``add_feature_choices`` skips a set whose columns are all there), e.g. cross x reference
    base_raw = base.model_dump(mode="json")
    combos.sort(key=lambda combo: sum(_value_at(base_raw, path) != value for path, value in combo.items()))
    out: dict[str, FeatureParams] = {}
    for combo in combos:
        variant = _with_values(base, combo)
        if variant != base:
            out.setdefault(variant.model_dump_json(), variant)
    return list(out.values())


def add_feature_choices(features: pd.DataFrame, candles: pd.DataFrame, params: Params, lake: Path,
                        bybit_lake: Path | None = None) -> pd.DataFrame:
    """``features`` (the store's rows of the base set) with the columns of every feature set of
    ``params.tune.space`` that it lacks, NaN where that set has no value for the row.
    ``bybit_lake``: where Bybit's series live for a cross-venue choice (default ``lake``)."""
    from features.compute import compute_features, feature_columns
    from features.materialise import read_alt_inputs, read_feature_inputs, read_other_venue

    out = features
    for variant in feature_variants(params.features, params.tune):
        new = [c for c in feature_columns(variant) if c not in out.columns]
        if not new:
            continue
        with_variant = params.model_copy(update={"features": variant})
        funding, reference = read_feature_inputs(lake, list(params.data.symbols), params.data.timeframe, with_variant)
        other = read_other_venue(bybit_lake or lake, list(params.data.symbols), params.data.timeframe, with_variant)
        alt = read_alt_inputs(lake, variant)
        computed = compute_features(candles, variant, funding=funding, reference=reference, other_venue=other,
                                    alt=alt)
        log.info("tune: %d feature columns of a features choice computed (%s)", len(new), ", ".join(new))
        out = out.merge(computed[KEYS + new], on=KEYS, how="left", validate="one_to_one")
    return out


def missing_columns(columns: list[str], features: pd.DataFrame) -> None:
    """DataError (one line) when a trial reads columns the study's union lacks."""
    absent = [c for c in columns if c not in features.columns]
    if absent:
        raise DataError(f"a trial reads feature columns {absent} that were not computed for this study (too many "
                        f"features combinations: more than {MAX_VARIANTS}); search fewer features dimensions at once")


def _value_at(raw: dict, path: str):
    node = raw
    for part in path.split(".")[1:]:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _with_values(base: FeatureParams, values: dict) -> FeatureParams:
    raw = base.model_dump(mode="json")
    for path, value in values.items():
        node = raw
        parts = path.split(".")[1:]  # drop the leading "features"
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    try:
        variant = FeatureParams.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"tune.space {values} refused: features.{'.'.join(map(str, first['loc']))}: "
                          f"{first['msg']}") from None
    from features.compute import feature_columns

    try:
        feature_columns(variant)  # the feature code's own checks (periods, duplicate columns)
    except ConfigError as err:
        raise ConfigError(f"tune.space {values} refused: {err}") from None
    return variant
