"""``qt ablate``'s stages: collect -> validate -> both arms (``training.ablate.run_ablation``).

Why no feature store: the ablation computes the "with" arm's features itself, from the validated
lake (``training.ablate.load_ablation_data``), so it needs neither a features stage run with the
base params nor one with the family on; and it trains nothing into the model registry.
"""

from __future__ import annotations

from data.sources import lake_root, with_collected_universe
from flows import stages
from qt.config import Params
from qt.paths import StatePaths


def with_family_series(params: Params, family: str, families: dict[str, dict] | None = None) -> Params:
    """``params`` whose ``alt.series`` also holds the alt series the family's "with" arm reads (the
    ablation collects them itself, as the features stage would need them with the family on)."""
    from features.alt_features import alt_series_needed
    from features.families import family_arms

    _, with_family = family_arms(params.features, family, families)
    needed = [s for s in alt_series_needed(with_family) if s not in params.alt.series]
    if not needed:
        return params
    return params.model_copy(update={"alt": params.alt.model_copy(update={"series": [*params.alt.series, *needed]})})


def ablate(params: Params, paths: StatePaths, family: str, members: list[str] | None = None,
           families: dict[str, dict] | None = None, progress=None) -> dict:
    """Collect and validate ``params``' universe, then ablate ``family`` on the validated symbols."""
    from training.ablate import arm_params, run_ablation

    arm_params(params, family, members, families)  # an unknown family fails before any data is read
    params = with_family_series(params, family, families)
    stages.collect(params, paths)
    stages.validate(params, paths)
    lake = lake_root(with_collected_universe(params, paths), paths)  # before the universe is cut
    return run_ablation(stages.only_validated(params, paths), paths, lake, family, members, families, progress)
