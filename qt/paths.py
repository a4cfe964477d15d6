"""The one state directory: everything the project writes lives below it.

Default is ``<project>/state`` (the DVC-tracked lake); ``QT_HOME`` overrides it,
so two runs with different ``QT_HOME`` never touch each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_params_path() -> Path | None:
    """``QT_PARAMS``, else ``./params.yaml``, else the project's; None = the embedded defaults."""
    env = os.environ.get("QT_PARAMS")
    if env:
        return Path(env)
    for cand in (Path.cwd() / "params.yaml", PROJECT_ROOT / "params.yaml"):
        if cand.is_file():
            return cand
    return None


@dataclass(frozen=True)
class StatePaths:
    home: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "StatePaths":
        env = os.environ if environ is None else environ
        home = env.get("QT_HOME")
        return cls(Path(home).expanduser().resolve() if home else PROJECT_ROOT / "state")

    @property
    def raw(self) -> Path:  # candles as collected, one Parquet file per symbol/timeframe
        return self.home / "raw"

    @property
    def features(self) -> Path:
        return self.home / "features"

    @property
    def models(self) -> Path:  # hand-over files between train, evaluate and promote
        return self.home / "models"

    @property
    def evaluation(self) -> Path:  # holdout backtests of the challenger and the baselines
        return self.home / "evaluation"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def executor_db(self) -> Path:
        return self.home / "executor" / "state.sqlite"

    @property
    def trials_ledger(self) -> Path:  # every (model, decision config) scored on a holdout: training.trials
        return self.home / "trials" / "ledger.sqlite"

    @property
    def tune_db(self) -> Path:  # Optuna's RDB storage of every `qt tune` study (training.tune)
        return self.home / "tune" / "studies.sqlite"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking and registry store: the server at ``QT_MLFLOW_URI`` when set (e.g.
        ``http://mlflow:5000`` in docker-compose.yml; artifacts still go to ``mlflow_artifacts``,
        a path every service sees), else the sqlite database under ``home``."""
        return os.environ.get("QT_MLFLOW_URI") or f"sqlite:///{self.mlflow_db}"

    def ensure(self) -> "StatePaths":
        for p in (self.raw, self.features, self.models, self.evaluation, self.reports, self.mlflow_db.parent,
                  self.mlflow_artifacts, self.prefect_home, self.bentoml_home,
                  self.executor_db.parent, self.logs):
            p.mkdir(parents=True, exist_ok=True)
        return self

    def tool_env(self) -> dict[str, str]:
        """Environment for the real tools so their state stays under ``home``."""
        return {
            "QT_HOME": str(self.home),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_REGISTRY_URI": self.tracking_uri,
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1",
        }
