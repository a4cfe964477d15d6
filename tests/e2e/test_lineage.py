"""`dvc repro` rebuilds the lineage from the raw data through the same CLI; `dvc dag` shows it.

Runs in a copy of the tracked project (with the real venv linked in) so the developer's own
`state/` is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["collect", "validate", "features", "train", "evaluate", "promote"]
TINY = {
    "data": {"source": "synthetic:5", "symbols": ["BTC/USDT", "ETH/USDT"]},
    "synthetic": {"bars": 1500, "signal_strength": 0.35},
    "train": {"folds": 2, "members": ["xgboost", "lightgbm"], "xgboost": {"n_estimators": 40, "max_depth": 3},
              "lightgbm": {"n_estimators": 40, "num_leaves": 7}},
    "gates": {"bootstrap_samples": 100},
}


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_HOME", "QT_PARAMS")}
    env["DVC_NO_ANALYTICS"] = "1"
    dvc = str(Path(sys.executable).with_name("dvc"))
    res = subprocess.run([dvc, *args], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"dvc {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git repo holding the tracked project files, tiny params, and the real venv."""
    dest = tmp_path_factory.mktemp("lineage") / "project"
    dest.mkdir()
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("state/", "tests/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    from qt.config import load_params

    (dest / "params.yaml").write_text(yaml.safe_dump(load_params(None, TINY).model_dump(mode="json")))
    git = {"cwd": dest, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **git)
    subprocess.run(["git", "add", "-A"], **git)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "snapshot"], **git)
    return dest


def test_dag_shows_every_stage_in_order(project):
    out = _dvc(project, "dag", "--md").stdout
    for a, b in zip(STAGES, STAGES[1:]):
        assert f"{a}" in out and f"{b}" in out
    edges = [ln for ln in out.splitlines() if "-->" in ln]
    assert len(edges) >= len(STAGES) - 1


def test_repro_runs_every_stage_through_the_cli_then_is_up_to_date(project):
    res = _dvc(project, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in res.stdout, res.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert (project / "state/reports/promote.json").is_file()
    again = _dvc(project, "repro")
    assert "Running stage" not in again.stdout


def test_changing_a_gate_param_reruns_only_promote(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gates"]["min_trades"] = params["gates"]["min_trades"] + 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    res = _dvc(project, "repro")
    ran = [s for s in STAGES if f"Running stage '{s}'" in res.stdout]
    assert ran == ["promote"], res.stdout
