"""`qt backtest`: any logged model on any source, reported with the evaluate stage's keys.

A tiny ensemble is trained through the real stages (tabular members only: fast); the
sequence-window path of ``model_predictions`` is specified with a stand-in model, because it
only has to hand the model the right columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from data.sources import lake_root
from qt.config import FeatureParams
from qt.errors import DataError, UserError
from data.lake import read_candles
from tests.training.support import SYMBOLS, build_state, make_params
from training.backtest_model import EVALUATION_KEYS, backtest_model, load_logged_model, model_predictions

pytestmark = pytest.mark.slow

QT = str(Path(sys.executable).with_name("qt"))
SEED = 7
OVERRIDES = {"data": {"source": f"synthetic:{SEED}"}, "synthetic": {"bars": 1500, "signal_strength": 0.4},
             "train": {"members": ["xgboost", "lightgbm"]}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(paths, params, params_file, train.json, evaluation.json) after train/evaluate/promote."""
    from training.stages import evaluate_stage, promote_stage, train_stage

    home = tmp_path_factory.mktemp("qt_home")
    params = make_params(0.4, bars=1500, data=OVERRIDES["data"], train=OVERRIDES["train"])
    paths = build_state(home, params, SEED)
    train_stage(params, paths)
    evaluate_stage(params, paths)
    assert promote_stage(params, paths)["registry"]["promoted"]
    params_file = home / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    info = json.loads((paths.models / "train.json").read_text())
    evaluation = json.loads((paths.evaluation / "evaluation.json").read_text())
    return paths, params, params_file, info, evaluation


def _champion_uri(params) -> str:
    return f"models:/{params.train.model_name}@champion"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(paths, *args):
    saved = dict(os.environ)
    try:
        return CliRunner().invoke(app, list(args), env={"QT_HOME": str(paths.home), "COLUMNS": "200"})
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_champion_backtest_on_its_holdout_reproduces_the_evaluate_stage(trained):
    paths, params, _, info, evaluation = trained
    candles = read_candles(lake_root(params, paths), params.data.symbols, params.data.timeframe)
    out = backtest_model(_champion_uri(params), candles, None, params, start=info["holdout_start"],
                         end=info["holdout_end"], tracking_uri=paths.tracking_uri)
    assert list(out) == list(EVALUATION_KEYS) == list(evaluation)
    for name in EVALUATION_KEYS:  # same model, same bars, same backtest: the same numbers
        assert set(out[name]) == set(evaluation[name]), name
        assert (out[name]["start"], out[name]["end"]) == (evaluation[name]["start"], evaluation[name]["end"])
        numbers = {k: v for k, v in evaluation[name].items() if k not in ("start", "end")}
        assert {k: out[name][k] for k in numbers} == pytest.approx(numbers, rel=1e-9, abs=1e-9), name


def test_cli_writes_the_evaluation_block_and_leaves_the_lake_untouched(trained, tmp_path):
    paths, params, params_file, info, evaluation = trained
    before = _tree_digest(paths.raw)
    out_file = tmp_path / "bt.json"
    res = _cli(paths, "backtest", "--model", _champion_uri(params), "--source", f"synthetic:{SEED}",
               "--start", info["holdout_start"][:10], "--params", str(params_file), "--output", str(out_file))
    assert res.exit_code == 0, res.output
    written = json.loads(out_file.read_text())
    assert list(written) == list(evaluation)
    for name in evaluation:
        assert set(written[name]) == set(evaluation[name]), name
    assert pd.Timestamp(written["strategy"]["start"]) >= pd.Timestamp(info["holdout_start"][:10], tz="UTC")
    for name in EVALUATION_KEYS:  # the printed table has a row per run
        assert name in res.output
    assert _tree_digest(paths.raw) == before


def test_range_without_candles_is_refused(trained):
    paths, params, params_file, _, _ = trained
    res = _cli(paths, "backtest", "--model", _champion_uri(params), "--source", f"synthetic:{SEED}",
               "--start", "2031-01-01", "--end", "2031-02-01", "--params", str(params_file))
    assert isinstance(res.exception, DataError) and "no 1h candles" in str(res.exception)


def test_unknown_model_is_one_line_exit_2(trained):
    paths, _, params_file, _, _ = trained
    uri, fragment = "models:/no-such-model@champion", "cannot load model 'models:/no-such-model@champion'"
    env = {**os.environ, "QT_HOME": str(paths.home)}
    env.pop("QT_PARAMS", None)
    res = subprocess.run([QT, "backtest", "--model", uri, "--params", str(params_file)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.stderr
    assert "Traceback" not in res.stderr


class _WindowModel:
    """Stand-in pyfunc: logged metadata, and a predict that keeps the frame it was given."""

    def __init__(self, metadata: dict):
        self.metadata = type("Meta", (), {"metadata": metadata})()
        self.seen: pd.DataFrame | None = None

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.seen = frame.copy()
        return pd.DataFrame({"prob_up": np.full(len(frame), 0.6), "expected_return": 0.001})


def _synthetic_candles(bars: int = 400) -> pd.DataFrame:
    from qt.config import SyntheticParams
    from data.synthetic import generate_market

    return generate_market(SYMBOLS[:2], "1h", SyntheticParams(bars=bars), 3)


def test_model_predictions_hand_sequence_models_their_return_windows():
    from features.compute import compute_features, feature_columns, warmup_bars

    fp = FeatureParams()
    length = 5
    columns = feature_columns(fp) + [f"seq_ret_{k}" for k in range(length)]
    model = _WindowModel({"feature_params": fp.model_dump(mode="json"), "feature_columns": columns,
                          "timeframe": "1h", "sequence_length": length})
    candles = _synthetic_candles()
    bars = np.sort(candles["timestamp"].unique())
    warmup = warmup_bars(fp)
    start, end = pd.Timestamp(bars[warmup + length + 10]), pd.Timestamp(bars[warmup + length + 60])
    preds = model_predictions(model, candles, start, end)

    assert list(model.seen.columns) == columns
    assert list(preds.columns) == ["symbol", "timestamp", "prob_up", "expected_return"]
    assert preds["timestamp"].min() == start and preds["timestamp"].max() == end
    assert len(preds) == 2 * 51  # both symbols, every bar of [start, end]
    feats = compute_features(candles, fp)
    for k in range(length):  # seq_ret_k is the 1-bar log return k rows earlier, same symbol
        lagged = feats.groupby("symbol")["logret_1"].shift(k)
        expected = lagged[(feats["timestamp"] >= start) & (feats["timestamp"] <= end)].to_numpy()
        assert np.array_equal(model.seen[f"seq_ret_{k}"].to_numpy(), expected)


def test_model_without_sequence_length_metadata_gets_the_tabular_columns_only():
    fp = FeatureParams()
    from features.compute import feature_columns

    model = _WindowModel({"feature_params": fp.model_dump(mode="json"), "feature_columns": feature_columns(fp),
                          "timeframe": "1h"})
    model_predictions(model, _synthetic_candles(), None, None)
    assert not any(c.startswith("seq_ret_") for c in model.seen.columns)


def test_a_model_of_another_timeframe_is_refused():
    params = make_params(0.0)
    model = _WindowModel({"feature_params": FeatureParams().model_dump(mode="json"), "feature_columns": [],
                          "timeframe": "4h"})
    with pytest.raises(UserError, match="--timeframe 4h"):
        backtest_model("models:/x/1", _synthetic_candles(), None, params, model=model)


@pytest.mark.parametrize("uri", ["champion", "s3://bucket/model", "models:/", "runs:"])
def test_malformed_uri_is_refused_naming_the_forms(uri):
    with pytest.raises(UserError, match="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model"):
        load_logged_model(uri)


def test_rows_without_a_full_return_window_are_not_predicted():
    from features.compute import compute_features, feature_columns

    fp = FeatureParams()
    length = 8
    model = _WindowModel({"feature_params": fp.model_dump(mode="json"), "timeframe": "1h", "sequence_length": length,
                          "feature_columns": feature_columns(fp) + [f"seq_ret_{k}" for k in range(length)]})
    candles = _synthetic_candles()
    preds = model_predictions(model, candles)
    rows = compute_features(candles, fp).groupby("symbol").size()
    # a window of `length` returns needs `length` feature rows: the first length-1 rows have none
    assert preds.groupby("symbol").size().to_dict() == (rows - (length - 1)).to_dict()
    assert not model.seen.isna().any().any()


def test_backtest_is_recorded_as_one_of_the_deflated_sharpe_trials(trained, tmp_path):
    from training.trials import TrialLedger

    paths, params, _, info, _ = trained
    ledger = TrialLedger(paths.trials_ledger)
    before = ledger.summary()
    changed = params.model_dump(mode="json")
    changed["signal"]["buy_threshold"] = params.signal.buy_threshold + 0.03  # a decision config not tried yet
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(changed))
    args = ("backtest", "--model", _champion_uri(params), "--source", f"synthetic:{SEED}",
            "--start", info["holdout_start"][:10], "--params", str(params_file))
    res = _cli(paths, *args)
    assert res.exit_code == 0, res.output
    after = ledger.summary()
    assert after["n_trials"] == before["n_trials"] + 1
    assert after["by_origin"].get("backtest", 0) == before["by_origin"].get("backtest", 0) + 1
    assert "trials N=" in res.output.replace("\n", "")
    assert _cli(paths, *args).exit_code == 0  # the same model and decision config again: not a new trial
    assert ledger.summary()["n_trials"] == after["n_trials"]
