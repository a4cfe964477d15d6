"""Thin MLflow adapter: runs, the logged ensemble, registry versions, aliases and tags.

The tracking URI is passed in (``StatePaths.tracking_uri``); nothing here reads the
environment. Aliases carry the lifecycle: ``challenger`` = the latest registered
candidate, ``champion`` = what the service serves. ``champion`` moves only through
``promote`` (called by the promote stage when every gate passed).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from qt.config import Params
from qt.errors import DataError
from qt.paths import PROJECT_ROOT

EXPERIMENT_NAME = "quantum-trader"
CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"
PREVIOUS_CHAMPION_TAG = "previous_champion"  # on a champion: the one it replaced (rollback target)
# Distributions the logged model needs at load time (pinned to what trained it).
_MODEL_REQUIREMENTS = ["mlflow", "cloudpickle", "numpy", "pandas", "scipy", "scikit-learn", "xgboost",
                       "lightgbm", "pydantic", "pyyaml", "ta-lib",
                       # the sequence members; torch is the CPU build (``+cpu``): install it from
                       # PyTorch's CPU index, never the CUDA wheel from PyPI
                       "torch", "neuralforecast"]
# Our packages copied into the model so it loads in any process (features/qt: imported by training).
_CODE_PACKAGES = ["qt", "features", "training"]


def pinned_requirements() -> list[str]:
    """``name==version`` for every distribution the model imports, from the running env."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in _MODEL_REQUIREMENTS]


def read_git_sha(root: Path = PROJECT_ROOT) -> str:
    """HEAD of the project repo, or ``unknown`` (no git, no commit yet)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def flatten_config(params: Params) -> dict[str, str]:
    """``section.key -> value`` strings, for mlflow params."""
    out = {}
    for section, values in params.model_dump(mode="json").items():
        for key, value in values.items():
            out[f"{section}.{key}"] = str(value)
    return out


class ModelRegistry:
    """One tracking/registry store (sqlite URI + file artifact root) and one model name."""

    def __init__(self, tracking_uri: str, model_name: str, artifact_location: Path | None = None,
                 experiment_name: str = EXPERIMENT_NAME):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_location = artifact_location
        self.experiment_name = experiment_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- runs -------------------------------------------------------------------------------
    def _activate(self) -> str:
        """Point the fluent API at our store (mlflow's log_model has no client form) -> experiment id."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            location = Path(self.artifact_location).resolve().as_uri() if self.artifact_location else None
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        return exp.experiment_id

    def log_training_run(self, result, params: Params, *, feature_set_hash: str, symbols: list[str],
                         raw_data_sha256: str | None = None) -> dict:
        """Log one training run (params, metrics, importance CSV, the ensemble) -> {run_id, model_uri}.

        The model card is added by ``log_model_card`` once the run id is known."""
        from features.labels import label_reach_bars
        from training.trials import model_digest

        experiment_id = self._activate()
        ensemble = result.ensemble
        example = result.input_example
        metadata = {
            "feature_params": params.features.model_dump(mode="json"),
            "feature_columns": list(ensemble.feature_columns),
            "feature_set_hash": feature_set_hash,
            "timeframe": params.data.timeframe,
            "horizon_bars": params.labels.horizon_bars,
            # what the members were fitted on and how many bars after t that label reads (the purge)
            "label_target": params.labels.target,
            "label_reach_bars": label_reach_bars(params.labels, params.risk),
            # the purge gap after each training label: which later bars the model never saw
            "embargo_bars": params.train.embargo_bars,
            "symbols": list(symbols),
            "train_start": result.train_range[0].isoformat(),
            "train_end": result.train_range[1].isoformat(),
            "holdout_start": result.holdout_range[0].isoformat(),
            "holdout_end": result.holdout_range[1].isoformat(),
            "trained_at": result.trained_at,
            "data_sha256": raw_data_sha256 or result.data_sha256,
            "training_frame_sha256": result.data_sha256,
            # settings that change a prediction: with the frame hash, the model's trial identity
            "model_digest": model_digest(params),
            "weights": ensemble.weights,
            "members": list(ensemble.members),
            # bars of 1-bar log-return history each input row carries (``seq_ret_*``); 0 = none
            "sequence_length": int(getattr(ensemble, "sequence_length", 0)),
            # feature columns whose windows of the same length ride along (``seq_<column>_k``)
            "sequence_exog": list(getattr(ensemble, "sequence_exog", [])),
        }
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_params({
                "feature_set_hash": feature_set_hash,
                # the validated raw candles (same hash as the run summary's data.sha256)
                "data_sha256": raw_data_sha256 or result.data_sha256,
                # the joined features + labels the members were fitted on
                "training_frame_sha256": result.data_sha256,
                "git_sha": read_git_sha(),
                "config_digest": params.digest(),
                "model_digest": model_digest(params),
                **flatten_config(params),
            })
            mlflow.set_tags({"stage": "trained", "model_name": self.model_name})
            mlflow.log_metrics(_flat_model_metrics(result.models))
            for m in result.models:
                for fold in m["cv"]["folds"]:
                    for key in ("auc", "log_loss", "ic"):
                        if _finite(fold[key]):
                            mlflow.log_metric(f"{m['name']}_cv_fold_{key}", fold[key], step=fold["fold"])
            with tempfile.TemporaryDirectory() as tmp:
                imp = Path(tmp) / "feature_importance.csv"
                result.feature_importance.to_csv(imp, index=False)
                mlflow.log_artifact(str(imp))
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=ensemble,
                metadata=metadata,
                signature=infer_signature(example, ensemble.predict_frame(example).reset_index(drop=True)),
                input_example=example,
                pip_requirements=pinned_requirements(),
                code_paths=[str(PROJECT_ROOT / p) for p in _CODE_PACKAGES],
            )
        return {"run_id": run.info.run_id, "model_uri": info.model_uri}

    def log_model_card(self, run_id: str, model_card: str) -> None:
        """(Re)write ``model_card.md`` of the run."""
        self.client.log_text(run_id, model_card, "model_card.md")

    def log_artifacts(self, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
        """Attach files (plots, tables) to the run, so a reviewer finds them beside the model."""
        for path in paths:
            if not Path(path).is_file():
                raise DataError(f"artefact {path} does not exist; it was not written by the stage")
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_evaluation(self, run_id: str, evaluation: dict[str, dict], plot_path: Path | None, model_card: str) -> None:
        """Add holdout backtest metrics (``holdout_<name>_<metric>``), the plot and the updated card."""
        self._activate()
        metrics = {f"holdout_{name}_{k}": float(v) for name, m in evaluation.items() for k, v in m.items()
                   if isinstance(v, (int, float)) and _finite(v)}
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics)
            if plot_path is not None:
                mlflow.log_artifact(str(plot_path))
            mlflow.log_text(model_card, "model_card.md")
            mlflow.set_tag("stage", "evaluated")

    def log_promotion(self, run_id: str, registry_summary: dict, model_card: str) -> None:
        self._activate()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict(registry_summary, "promotion.json")
            mlflow.log_text(model_card, "model_card.md")
            mlflow.set_tags({"stage": "promoted" if registry_summary["promoted"] else "rejected",
                             "registered_version": str(registry_summary["version"])})

    def count_trials(self) -> int:
        """Distinct whole-config digests trained in this store (>= 1). Not the deflated Sharpe's N any
        more: that comes from the trial ledger (``training.trials``), which also counts decision
        configs, backtests and champion re-evaluations and survives a new store."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            return 1
        digests = set()
        for run in self.client.search_runs([exp.experiment_id], max_results=5000):
            if "config_digest" in run.data.params:
                digests.add(run.data.params["config_digest"])
        return max(1, len(digests))

    # -- registry ---------------------------------------------------------------------------
    def register_version(self, run_id: str, model_name: str | None = None, model_uri: str | None = None) -> str:
        """Register the run's ensemble (``model_uri`` from ``log_training_run``, else the run's
        ``model`` artefact) as a new version with alias ``challenger`` -> version string."""
        name = model_name or self.model_name
        self._activate()
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        mv = mlflow.register_model(model_uri or f"runs:/{run_id}/{MODEL_ARTIFACT}", name)
        self.client.set_registered_model_alias(name, CHALLENGER, mv.version)
        self.client.set_model_version_tag(name, mv.version, "run_id", run_id)
        return str(mv.version)

    def set_gate_tags(self, version: str, report) -> None:
        """Tag the version with every gate: ``gate.<name>`` = pass/FAIL, value, threshold."""
        self.client.set_model_version_tag(self.model_name, version, "gates_passed", str(report.passed).lower())
        for g in report.gates:
            self.client.set_model_version_tag(
                self.model_name, version, f"gate.{g['name']}",
                f"{'pass' if g['passed'] else 'FAIL'} value={g['value']:.6g} threshold={g['threshold']:.6g}")

    def promote(self, version: str) -> None:
        """Move ``champion`` to ``version`` and stamp ``promoted_at`` (UTC ISO)."""
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)
        self.client.set_model_version_tag(self.model_name, version, "promoted_at",
                                          datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def champion_version(self, model_name: str | None = None) -> str | None:
        return self._alias_version(CHAMPION, model_name)

    def challenger_version(self, model_name: str | None = None) -> str | None:
        return self._alias_version(CHALLENGER, model_name)

    def _alias_version(self, alias: str, model_name: str | None) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(model_name or self.model_name, alias).version)
        except MlflowException:
            return None

    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.model_name, version).tags)

    def load_version(self, version: str):
        """The pyfunc of a registered version."""
        self._activate()
        return mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")

    def load_champion(self, model_name: str | None = None):
        """The champion's pyfunc; DataError when there is none (nothing to serve)."""
        name = model_name or self.model_name
        if self.champion_version(name) is None:
            raise DataError(f"model {name!r} has no champion yet; run the promote stage first")
        self._activate()
        return mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")

    # -- approvals and champion history (``qt models``) ---------------------------------------
    def set_champion(self, version: str, tags: dict[str, str]) -> str | None:
        """Move ``champion`` to ``version`` (a promotion or an approval) -> the previous champion.

        The previous champion is written on ``version`` as tag ``previous_champion``: that
        chain of tags is the history ``restore_champion`` (rollback) walks back along.
        """
        previous = self.champion_version()
        self.require_version(version)
        stamp = {"promoted_at": utc_now(), **tags}
        if previous is not None and previous != version:
            stamp[PREVIOUS_CHAMPION_TAG] = previous
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)
        self.set_version_tags(version, stamp)
        return previous

    def restore_champion(self, version: str, tags: dict[str, str]) -> None:
        """Move ``champion`` back to ``version`` WITHOUT rewriting its ``previous_champion``
        (a rollback walks the history; it does not add to it)."""
        self.require_version(version)
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)
        self.set_version_tags(version, tags)

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, version, key, str(value))

    def require_version(self, version: str) -> None:
        """DataError naming the versions that exist when ``version`` is not registered."""
        try:
            self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            known = [v["version"] for v in self.list_versions()]
            raise DataError(f"model {self.model_name!r} has no version {version!r}; registered: "
                            f"{', '.join(known) if known else 'none (run `qt promote` first)'}") from None

    def list_versions(self) -> list[dict]:
        """Every registered version, oldest first: version, aliases, created (UTC), run_id, tags."""
        try:
            # search results carry no aliases in this store; the registered model has them all
            aliases = self.client.get_registered_model(self.model_name).aliases or {}
        except MlflowException:
            return []
        out = []
        for mv in self.client.search_model_versions(f"name='{self.model_name}'"):
            held = sorted(a for a, v in aliases.items() if str(v) == str(mv.version))
            out.append({"version": str(mv.version), "aliases": held,
                        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc),
                        "run_id": mv.run_id, "tags": dict(mv.tags or {})})
        return sorted(out, key=lambda v: int(v["version"]))

    def run_metrics(self, run_id: str | None) -> dict[str, float]:
        """The run's logged metrics (``holdout_strategy_sharpe``, ...); {} when the run is gone."""
        if not run_id:
            return {}
        try:
            return dict(self.client.get_run(run_id).data.metrics)
        except MlflowException:
            return {}


def utc_now() -> str:
    """Now, UTC ISO to the second (the stamp on promotions, approvals and rollbacks)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def champion_version(tracking_uri: str, model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    return ModelRegistry(tracking_uri, model_name).champion_version()


def load_champion(tracking_uri: str, model_name: str):
    """The champion's pyfunc; DataError when there is none."""
    return ModelRegistry(tracking_uri, model_name).load_champion()


def _finite(v) -> bool:
    try:
        return v == v and abs(float(v)) != float("inf")
    except (TypeError, ValueError):
        return False


def _flat_model_metrics(models: list[dict]) -> dict[str, float]:
    out = {}
    for m in models:
        for split in ("oos", "cv"):
            for key in ("auc", "log_loss", "accuracy", "ic", "rows"):
                v = m[split][key]
                if _finite(v):
                    out[f"{m['name']}_{split}_{key}"] = float(v)
    return out


def model_metadata(pyfunc_model) -> dict:
    """The ``metadata`` dict logged with a model (feature params, columns, ranges, ...)."""
    return dict(pyfunc_model.metadata.metadata or {})


def unwrap_ensemble(pyfunc_model):
    """The in-process EnsembleModel behind a loaded pyfunc (for ``predict_frame``)."""
    return pyfunc_model.unwrap_python_model()

