"""The `qt` command: a user's mistake is one line on stderr, exit 2, and nothing written."""

import pytest
import os
import subprocess
import sys
from pathlib import Path


from tests.conftest import require_shared_data

pytestmark = pytest.mark.slow

QT = str(Path(sys.executable).with_name("qt"))


def _qt(args, home: Path, **env):
    e = {**os.environ, "QT_HOME": str(home), **env}
    e.pop("QT_PARAMS", None)
    return subprocess.run([QT, *args], capture_output=True, text=True, env=e, timeout=120)


def _assert_one_line_error(res, fragment):
    """Exit 2, exactly one `error:` line (progress lines may precede it), no traceback."""
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.stderr
    assert res.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in res.stderr


def test_unknown_symbol(tmp_path):
    root = require_shared_data()
    res = _qt(["collect", "--source", f"parquet:{root}", "--symbols", "NOPE/USDT"], tmp_path)
    _assert_one_line_error(res, "unknown symbol(s) NOPE/USDT")
    assert not list((tmp_path / "raw").rglob("*.parquet"))


def test_missing_directory(tmp_path):
    res = _qt(["collect", "--source", f"parquet:{tmp_path / 'missing'}"], tmp_path)
    _assert_one_line_error(res, "does not exist")


def test_malformed_params_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("risk:\n  max_open_positions: many\n")
    res = _qt(["collect", "--params", str(bad)], tmp_path)
    _assert_one_line_error(res, "risk.max_open_positions")


def test_date_range_with_no_data(tmp_path):
    root = require_shared_data()
    res = _qt(["collect", "--source", f"parquet:{root}", "--symbols", "BTC/USDT",
               "--start", "2031-01-01"], tmp_path)
    _assert_one_line_error(res, "no 1h candles in")


def test_inverted_date_range(tmp_path):
    res = _qt(["collect", "--start", "2024-02-01", "--end", "2024-01-01"], tmp_path)
    _assert_one_line_error(res, "is not before --end")


def test_unsupported_executor_mode_names_the_alternative(tmp_path):
    res = _qt(["execute", "--mode", "live"], tmp_path)
    _assert_one_line_error(res, "use --mode paper")


def test_two_state_directories_never_touch_each_other(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _qt(["collect", "--symbols", "BTC/USDT"], a).returncode == 0
    assert _qt(["collect", "--source", "synthetic:9", "--symbols", "ETH/USDT"], b).returncode == 0
    assert {p.parent.parent.name for p in (a / "raw").rglob("*.parquet")} == {"BTC_USDT"}
    assert {p.parent.parent.name for p in (b / "raw").rglob("*.parquet")} == {"ETH_USDT"}
