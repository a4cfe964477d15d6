"""params.yaml is validated at start-up: a mistake is one line naming the key."""

from pathlib import Path

import pytest

from qt.config import Params, load_params
from qt.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_committed_params_yaml_is_valid_and_equals_embedded_defaults():
    assert load_params(PROJECT_ROOT / "params.yaml") == Params()


@pytest.mark.parametrize("text, key", [
    ("data:\n  symbolz: [BTC/USDT]\n", "data.symbolz"),
    ("risk:\n  stop_loss_pct: -0.1\n", "risk.stop_loss_pct"),
    ("data:\n  timeframe: 7h\n", "data.timeframe"),
    ("bogus_section: 1\n", "bogus_section"),
    ("train:\n  holdout_fraction: 0.9\n", "train.holdout_fraction"),
])
def test_rejects_bad_key_or_value_naming_the_key(tmp_path, text, key):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(p)
    msg = str(err.value)
    assert key in msg and "\n" not in msg


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data:\n  symbols: [BTC/USDT\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_params(p)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_cross_field_rule_rejects_label_horizon_beyond_holding_time():
    with pytest.raises(ConfigError, match="horizon_bars"):
        load_params(None, {"labels": {"horizon_bars": 48}, "risk": {"max_holding_bars": 24}})


def test_config_is_frozen():
    p = Params()
    with pytest.raises(Exception):
        p.data.timeframe = "4h"  # type: ignore[misc]
