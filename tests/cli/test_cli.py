"""The `qt` command: a user's mistake is one line on stderr, exit 2, and nothing written."""

import pytest

from tests.cli.support import assert_one_line_error, run_qt
from tests.support import require_shared_data

pytestmark = pytest.mark.slow


def test_unknown_symbol(tmp_path):
    root = require_shared_data()
    res = run_qt(["collect", "--source", f"parquet:{root}", "--symbols", "NOPE/USDT"], tmp_path)
    assert_one_line_error(res, "unknown symbol(s) NOPE/USDT")
    assert not list((tmp_path / "raw").rglob("*.parquet"))


def test_missing_directory(tmp_path):
    res = run_qt(["collect", "--source", f"parquet:{tmp_path / 'missing'}"], tmp_path)
    assert_one_line_error(res, "does not exist")


def test_malformed_params_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("risk:\n  max_open_positions: many\n")
    res = run_qt(["collect", "--params", str(bad)], tmp_path)
    assert_one_line_error(res, "risk.max_open_positions")


def test_date_range_with_no_data(tmp_path):
    root = require_shared_data()
    res = run_qt(["collect", "--source", f"parquet:{root}", "--symbols", "BTC/USDT",
                  "--start", "2031-01-01"], tmp_path)
    assert_one_line_error(res, "no 1h candles in")


def test_inverted_date_range(tmp_path):
    res = run_qt(["collect", "--start", "2024-02-01", "--end", "2024-01-01"], tmp_path)
    assert_one_line_error(res, "is not before --end")


def test_unsupported_executor_mode_names_the_alternative(tmp_path):
    res = run_qt(["execute", "--mode", "live"], tmp_path)
    assert_one_line_error(res, "use --mode paper")


def test_two_state_directories_never_touch_each_other(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_qt(["collect", "--symbols", "BTC/USDT"], a).returncode == 0
    assert run_qt(["collect", "--source", "synthetic:9", "--symbols", "ETH/USDT"], b).returncode == 0
    assert {p.parent.parent.name for p in (a / "raw").rglob("*.parquet")} == {"BTC_USDT"}
    assert {p.parent.parent.name for p in (b / "raw").rglob("*.parquet")} == {"ETH_USDT"}
