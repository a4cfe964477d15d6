"""The champion is re-scored only on the challenger's holdout bars it was never fitted on, and the
comparison is refused (failing the promotion) when too few such bars remain."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from qt.timeframes import timeframe_ms
from training.champion_window import champion_scoring_window
from training.registry import ModelRegistry
from training.stages import evaluate_stage, promote_stage, train_stage

from tests.training.support import STRONG_SIGNAL, build_state, make_params

pytestmark = pytest.mark.slow

FAST = {"members": ["xgboost", "lightgbm"], "folds": 2}


def _with(params, section: str, **changes):
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """A champion trained with a 25 % holdout, then a challenger on the same data with a 45 % holdout:
    the challenger's holdout starts well inside the champion's training window."""
    home = tmp_path_factory.mktemp("overlap_state")
    params = make_params(STRONG_SIGNAL, bars=1200, data={"source": "synthetic:5"}, train=FAST)
    paths = build_state(home, params, 5)
    train_stage(params, paths)
    evaluate_stage(params, paths)
    first = promote_stage(params, paths)["registry"]
    registry = ModelRegistry(paths.tracking_uri, params.train.model_name)
    if not first["promoted"]:  # only the alias matters here
        registry.set_champion(first["version"], {"approval": "forced"})
    champion_info = json.loads((paths.models / "train.json").read_text())
    challenger = _with(params, "train", holdout_fraction=0.45)
    train_stage(challenger, paths)
    evaluate_stage(challenger, paths)
    # the bars of the challenger's holdout backtest: what both sides of the comparison trade
    holdout = pd.Series(pd.read_parquet(paths.evaluation / "holdout_returns.parquet").index)
    return paths, challenger, champion_info, holdout, first["version"]


def test_overlap_champion_is_scored_only_after_its_training_end(overlapping):
    paths, params, champion, holdout, champion_version = overlapping
    reg = promote_stage(params, paths)["registry"]
    assert reg["previous_champion"] == champion_version
    bars = pd.DatetimeIndex(holdout.unique()).sort_values()
    # by hand: the champion's last training label ends h bars after its training end, then the embargo
    bar = pd.Timedelta(milliseconds=timeframe_ms(params.data.timeframe))
    first_clean = max(pd.Timestamp(champion["train_end"]) + (params.labels.horizon_bars + params.train.embargo_bars
                                                             + 1) * bar, pd.Timestamp(champion["holdout_start"]))
    dropped = int((bars < first_clean).sum())
    assert bars[0] < pd.Timestamp(champion["train_end"]) and dropped > 0  # the overlap is real
    window = reg["champion_evaluation"]["overlap"]
    assert window["status"] == "compared"
    assert pd.Timestamp(window["scored_from"]) == first_clean
    assert (window["bars_dropped"], window["bars_used"]) == (dropped, len(bars) - dropped)
    assert "dropped" in window["why"]
    # the champion's backtest starts there, and both sides of the comparison use the same bars
    assert pd.Timestamp(reg["champion_evaluation"]["start"]) >= first_clean
    vs_champion = next(g for g in reg["gates"] if g["name"] == "sharpe_vs_champion")
    assert f"on {len(bars) - dropped} bars" in vs_champion["detail"]


def test_overlap_too_small_refuses_the_comparison_and_the_promotion(overlapping):
    paths, params, _, holdout, champion_version = overlapping
    strict = _with(params, "gates", min_champion_bars=holdout.nunique() + 1)
    reg = promote_stage(strict, paths)["registry"]
    window = reg["champion_evaluation"]["overlap"]
    assert window["status"] == "refused" and "refused" in window["why"]
    gate = next(g for g in reg["gates"] if g["name"] == "champion_comparison")
    assert not gate["passed"] and "refused" in gate["detail"]
    assert not {"sharpe_vs_champion", "bootstrap_vs_champion"} & {g["name"] for g in reg["gates"]}
    assert not reg["promoted"] and reg["champion"] == champion_version
    assert any(r.startswith("champion_comparison failed") for r in reg["reasons"])


@pytest.mark.parametrize("metadata,used,status", [
    ({"train_end": "2024-01-01 09:00", "horizon_bars": 2, "embargo_bars": 3}, 6, "compared"),  # from 15:00
    ({"train_end": "2024-01-01 09:00", "horizon_bars": 2, "embargo_bars": 3,
      "holdout_start": "2024-01-01 17:00"}, 4, "compared"),  # its own holdout began later (a gap)
    ({"train_end": "2024-01-01 09:00", "horizon_bars": 2, "label_reach_bars": 4, "embargo_bars": 3}, 4,
     "compared"),  # a triple-barrier label reads 4 bars, not the 2-bar horizon: from 17:00
    ({"train_end": "2024-01-01 12:00", "horizon_bars": 2}, 1, "refused"),  # embargo 5 from params: from 20:00
    ({"horizon_bars": 2}, 0, "refused"),  # no training end logged
])
def test_overlap_window_by_hand(metadata, used, status):
    holdout = pd.Series(pd.date_range("2024-01-01 10:00", "2024-01-01 20:00", freq="h", tz="UTC")).repeat(2)
    out = champion_scoring_window(holdout, metadata, bar_ms=3_600_000, embargo_bars_default=5, min_bars=3)
    assert (out["status"], out["bars_used"], out["bars_dropped"], out["bars_total"]) == (status, used, 11 - used, 11)
