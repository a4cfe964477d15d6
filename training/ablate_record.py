"""Where a ``qt ablate`` run is recorded: the trial ledger, MLflow, and ``reports/ablation-<family>.*``.

Why apart from ``training.ablate``: the comparison is pure computation its tests check; this is
I/O. Both arms scored the holdout, so both are trials (origin ``ablate``, their holdout per-bar
Sharpe and bars); MLflow gets one parent run per ablation (experiment ``<model_name>-ablate``)
with the report as an artifact and the two arms as child runs holding their per-block metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

from qt.atomic import write_json_atomic
from qt.config import Params
from qt.paths import StatePaths
from training.tune import TuneData

ABLATE_TAG = "qt.ablate.family"


def record_arms(params: Params, paths: StatePaths, report: dict, arm_params: dict[str, Params],
                arms: dict[str, list[dict]], data: TuneData) -> dict:
    """Ledger rows and MLflow runs for both arms -> ``{"mlflow": {...}, "ledger": [...]}``."""
    from mlflow.tracking import MlflowClient

    from training.trials import Trial, TrialLedger, decision_digest, model_digest

    client = MlflowClient(tracking_uri=paths.tracking_uri)
    name = f"{params.train.model_name}-ablate"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        name, artifact_location=paths.mlflow_artifacts.resolve().as_uri())
    family = report["family"]
    parent = client.create_run(exp_id, run_name=f"ablate-{family}", tags={ABLATE_TAG: family}).info.run_id
    client.log_param(parent, "family", family)
    client.log_param(parent, "members", ",".join(report["members"]))
    client.log_param(parent, "override", json.dumps(report["override"]))
    for part in ("inner", "holdout"):
        for metric in ("sharpe", "auc", "ic"):
            for key in ("change", "low", "high"):
                value = report[part][metric][key]
                if value == value:  # NaN is not logged
                    client.log_metric(parent, f"{part}_{metric}_{key}", value)
    ledger = TrialLedger(paths.trials_ledger)
    children, rows = {}, []
    for arm, blocks in arms.items():
        tp = arm_params[arm]
        rid = client.create_run(exp_id, run_name=f"ablate-{family}-{arm}",
                                tags={"mlflow.parentRunId": parent, ABLATE_TAG: family, "qt.ablate.arm": arm}).info.run_id
        client.log_param(rid, "arm", arm)
        client.log_param(rid, "features", json.dumps(tp.features.model_dump(mode="json"))[:6000])
        for b in blocks:
            if b["fold"] == "holdout":
                for key in ("sharpe", "trades", "net_return", "bars"):
                    client.log_metric(rid, f"holdout_{key}", float(b[key]))
            else:
                for key in ("sharpe", "trades", "net_return"):
                    client.log_metric(rid, f"fold_{key}", float(b[key]), step=int(b["fold"]))
        client.set_terminated(rid)
        children[arm] = rid
        hold = next(b for b in blocks if b["fold"] == "holdout")
        trial = Trial(f"{model_digest(tp)}/ablate-{data.key()}", decision_digest(tp), "ablate", hold["sharpe"],
                      hold["bars"], params.train.model_name, rid)
        rows.append({"arm": arm, "model_id": trial.model_id, "new": ledger.record(trial)})
    return {"mlflow": {"parent_run_id": parent, "child_run_ids": children, "experiment": name}, "ledger": rows,
            "_parent": parent}


def write_reports(report: dict, paths: StatePaths) -> list[Path]:
    """``reports/ablation-<family>.json`` and ``.md``; both logged on the MLflow parent run."""
    paths.reports.mkdir(parents=True, exist_ok=True)
    parent = report.pop("_parent", None)
    js = paths.reports / f"ablation-{report['family']}.json"
    md = paths.reports / f"ablation-{report['family']}.md"
    report = {**report, "files": [str(js), str(md)]}
    write_json_atomic(js, report, indent=2, default=str)
    md.write_text(markdown(report))
    if parent is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=paths.tracking_uri)
        client.log_artifact(parent, str(js))
        client.log_artifact(parent, str(md))
        client.set_terminated(parent)
    return [js, md]


def summary_rows(report: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(part, metric, without, with, change, interval) per line: the terminal table's and the .md's rows."""
    out = []
    for part in ("inner", "holdout"):
        for metric in ("sharpe", "auc", "ic"):
            m = report[part][metric]
            mark = " *" if m["excludes_zero"] else ""
            out.append((part, metric, f"{m['without']:.4f}", f"{m['with']:.4f}", f"{m['change']:+.4f}",
                        f"[{m['low']:+.4f}, {m['high']:+.4f}]{mark}"))
    return out


def markdown(report: dict) -> str:
    b = report["bootstrap"]
    lines = [f"# Ablation: `{report['family']}`", "",
             f"Override (on): `{json.dumps(report['override'])}`; columns added: {', '.join(report['columns_added'])}",
             f"Members: {', '.join(report['members'])} - {report['members_note']}",
             f"Data: {report['data']['symbols']} {report['data']['timeframe']}, holdout from "
             f"{report['data']['holdout_start']}; {report['traded_inner_folds']} traded inner folds; seed {report['seed']}",
             f"Intervals: {b['method']}, {b['samples']} samples, mean block {b['mean_block_bars']} bars, "
             f"{b['confidence']:.0%} {b['interval']} (* excludes 0). Sharpe per bar, net of costs.", "",
             "| part | metric | without | with | change | interval |", "|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in summary_rows(report)]
    v = report["verdict"]
    lines += ["", f"**{'Keep' if v['keep'] else 'Do not keep'}**: {v['why']}.", ""]
    return "\n".join(lines)
