"""Read model of the model registry (MLflow) and the latest drift check.

The champion is what the ``champion`` alias points at (``training.registry``): its version,
when it was trained (the ``trained_at`` its training run wrote into the model's metadata,
else the run's start), its gate results (the ``gate.*`` tags ``qt promote`` wrote), how it
was approved, and the feature importance CSV its training run logged. Drift comes from
``reports/drift.json``, the record every drift check writes beside its MLflow run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

IMPORTANCE_CSV = "feature_importance.csv"


@dataclass
class ChampionView:
    model_name: str
    version: str | None  # None: no champion yet (the reason is in ``note``)
    note: str = ""
    trained_at: str | None = None
    promoted_at: str | None = None
    gates: str = ""  # "passed" | "FAILED: ..." | "not gated"
    gate_rows: list[dict] = field(default_factory=list)  # gate, result, value, threshold
    approval: str = ""
    importance: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["feature", "importance"]))


def parse_gate_tags(tags: dict[str, str]) -> list[dict]:
    """``gate.<name>`` = ``pass value=.. threshold=..`` tags -> one row per gate, sorted by name."""
    rows = []
    for key, text in sorted(tags.items()):
        if not key.startswith("gate."):
            continue
        parts = text.split()
        nums = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        rows.append({"gate": key.removeprefix("gate."), "result": parts[0] if parts else "?",
                     "value": nums.get("value", ""), "threshold": nums.get("threshold", "")})
    return rows


def top_importance(table: pd.DataFrame, top: int = 15) -> pd.DataFrame:
    """``feature, importance``: the ensemble column (else the first member column with values),
    the ``top`` largest, largest first. Sequence members have no per-feature importance (NaN)."""
    if "feature" not in table.columns:
        return pd.DataFrame(columns=["feature", "importance"])
    cols = [c for c in table.columns if c != "feature" and not table[c].isna().all()]
    if not cols:
        return pd.DataFrame(columns=["feature", "importance"])
    col = "ensemble" if "ensemble" in cols else cols[0]
    out = table[["feature", col]].rename(columns={col: "importance"}).dropna()
    return out.sort_values("importance", ascending=False).head(top).reset_index(drop=True)


def read_champion(tracking_uri: str, model_name: str, mlflow_db: Path | None = None) -> ChampionView:
    """The champion of ``model_name`` in the registry at ``tracking_uri`` (never raises for a
    missing store, model or artefact: the view says what is missing)."""
    if mlflow_db is not None and not Path(mlflow_db).is_file():
        return ChampionView(model_name, None, note=f"no MLflow registry at {mlflow_db} yet: run `qt train`")
    from mlflow.exceptions import MlflowException

    from training.approval import approval_label, gate_summary
    from training.registry import ModelRegistry

    reg = ModelRegistry(tracking_uri, model_name)
    try:
        version = reg.champion_version()
        if version is None:
            return ChampionView(model_name, None, note=f"{model_name!r} has no champion yet: run `qt promote`")
        mv = reg.client.get_model_version(model_name, version)
    except MlflowException as exc:
        return ChampionView(model_name, None, note=f"registry unreadable: {str(exc).splitlines()[0][:120]}")
    tags = dict(mv.tags or {})
    run_id = tags.get("run_id") or mv.run_id
    view = ChampionView(model_name, version, trained_at=_trained_at(reg, model_name, version, run_id),
                        promoted_at=tags.get("promoted_at"), gates=gate_summary(tags),
                        gate_rows=parse_gate_tags(tags), approval=approval_label(tags, True))
    view.importance, note = _importance(reg, run_id)
    view.note = note
    return view


def _trained_at(reg, model_name: str, version: str, run_id: str | None) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.set_registry_uri(reg.tracking_uri)  # ``models:/`` resolves through the fluent registry URI
        info = mlflow.models.get_model_info(f"models:/{model_name}/{version}")
        if info.metadata and info.metadata.get("trained_at"):
            return str(info.metadata["trained_at"])
    except (MlflowException, OSError):
        pass
    if run_id:
        try:
            start = reg.client.get_run(run_id).info.start_time
            return datetime.fromtimestamp(start / 1000, timezone.utc).isoformat(timespec="seconds")
        except MlflowException:
            return None
    return None


def _importance(reg, run_id: str | None) -> tuple[pd.DataFrame, str]:
    from mlflow.exceptions import MlflowException

    empty = pd.DataFrame(columns=["feature", "importance"])
    if not run_id:
        return empty, "the champion names no training run: no feature importance"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = reg.client.download_artifacts(run_id, IMPORTANCE_CSV, tmp)
            table = pd.read_csv(path)
    except (MlflowException, OSError, ValueError) as exc:
        return empty, f"no {IMPORTANCE_CSV} in run {run_id}: {type(exc).__name__}"
    return top_importance(table), ""


def read_drift(reports_dir: Path) -> dict:
    """The latest drift check (``reports/drift.json``): status, checked_at, breaches; or why none."""
    path = Path(reports_dir) / "drift.json"
    if not path.is_file():
        return {"status": "never checked (run `qt drift`)", "checked_at": None, "breaches": []}
    try:
        d = json.loads(path.read_text())
    except ValueError:
        return {"status": f"unreadable {path}", "checked_at": None, "breaches": []}
    status = "no champion to check" if d.get("status") == "no_champion" else \
        ("DRIFTED" if d.get("drifted") else "no drift")
    return {"status": status, "checked_at": d.get("checked_at"),
            "breaches": [b.get("message", str(b)) for b in d.get("breaches", [])]}
