"""``qt collect --alt``: the alt series named on the command line are collected beside the candles
(into the same lake's alt/) and recorded in collect.json; a bad name is one UserError line."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from typer.testing import CliRunner

from cli.main import app
from qt.errors import UserError


def test_collect_with_alt_stores_and_records_the_series(tmp_path):
    src = tmp_path / "src" / "alt"
    src.mkdir(parents=True)
    days = pd.date_range("2024-01-01", "2024-01-05", freq="D", tz="UTC")
    pd.DataFrame({"timestamp": days, "value": [10, 20, 30, 40, 50], "classification": "Fear"}).to_parquet(
        src / "fear_greed.parquet")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"source": "synthetic:3", "symbols": ["BTC/USDT"]},
                                      "synthetic": {"bars": 400}, "alt": {"source": f"parquet:{tmp_path / 'src'}"}}))
    env = {"QT_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["collect", "--params", str(params), "--alt", "fear_greed"], env=env)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "home" / "reports" / "collect.json").read_text())
    assert record["data"]["alt"]["series"]["fear_greed"]["rows_added"] == 5
    bad = CliRunner().invoke(app, ["collect", "--params", str(params), "--alt", "gossip"], env=env)
    assert isinstance(bad.exception, UserError) and "--alt 'gossip'" in str(bad.exception)  # main(): exit 2
