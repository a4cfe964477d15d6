"""The retrain flow under Prefect: newest data in, a registered and gated version out, no serving."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from qt.errors import ConfigError
from qt.paths import StatePaths

pytestmark = pytest.mark.slow

SMALL = {
    "data": {"source": "synthetic:13", "symbols": ["BTC/USDT", "ETH/USDT"]},
    "synthetic": {"bars": 1200, "signal_strength": 0.4},
    "train": {"folds": 3, "members": ["xgboost", "lightgbm"],
              "xgboost": {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.1},
              "lightgbm": {"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.1}},
    "gates": {"bootstrap_samples": 100},
}


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow

    home = tmp_path_factory.mktemp("qt_home")
    params_file = home / "params.yaml"
    params_file.write_text(yaml.safe_dump(SMALL))
    saved = dict(os.environ)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            summary = retrain_flow(params_path=str(params_file), home=str(home))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return summary, StatePaths(home)


def test_retrain_registers_a_gated_version_from_freshly_collected_data(retrained):
    from training.registry import ModelRegistry

    summary, paths = retrained
    for key in ("data", "validation", "features", "models", "evaluation", "registry"):
        assert key in summary, key
    assert "serving" not in summary and "executor" not in summary
    reg = summary["registry"]
    registry = ModelRegistry(paths.tracking_uri, reg["model_name"])
    assert [v["version"] for v in registry.list_versions()] == [reg["version"]]
    tags = registry.version_tags(reg["version"])
    assert tags["gates_passed"] == str(all(g["passed"] for g in reg["gates"])).lower()
    assert {f"gate.{g['name']}" for g in reg["gates"]} <= set(tags)
    assert (registry.champion_version() == reg["version"]) is reg["promoted"]
    assert json.loads((paths.reports / "retrain.json").read_text())["registry"]["version"] == reg["version"]


def test_retrain_refuses_a_config_pinned_to_a_fixed_end(tmp_path):
    from flows.retrain import retrain_params

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({**SMALL, "data": {**SMALL["data"], "end": "2024-01-01"}}))
    with pytest.raises(ConfigError, match="remove data.end"):
        retrain_params(str(params_file))
