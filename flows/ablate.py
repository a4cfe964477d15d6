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


def ablate(params: Params, paths: StatePaths, family: str, members: list[str] | None = None,
           families: dict[str, dict] | None = None, progress=None) -> dict:
    """Collect and validate ``params``' universe, then ablate ``family`` on the validated symbols."""
    from training.ablate import arm_params, run_ablation

    arm_params(params, family, members, families)  # an unknown family fails before any data is read
    stages.collect(params, paths)
    stages.validate(params, paths)
    lake = lake_root(with_collected_universe(params, paths), paths)  # before the universe is cut
    return run_ablation(stages.only_validated(params, paths), paths, lake, family, members, families, progress)
