"""Running a ``qt tune`` search: workers, progress, MLflow runs, the ledger and the tuned params file.

Why a module apart from ``training.tune`` (the objective and the study): this is the machinery
around it - processes, terminals, tracking - which the objective's tests do not need.

* ``run_search``: opens (or resumes) the study in the state directory's RDB storage, runs this
  process's share of the trials and starts ``workers - 1`` more processes
  (``python -m training.tune_run --worker ...``) on the same study, each with its share of
  ``n_trials``; they are stopped by PID when anything fails. With ``runner.task_runner: dask``
  the other shares are tasks on the cluster of ``runner:`` instead (``qt.cluster``). Progress: a rich bar (trial k/N,
  best so far, ETA) on a terminal, one line per trial otherwise.
* MLflow: one parent run per study (experiment ``<model_name>-tune``; found again by its tag on a
  resumption), one child run per trial (its sampled values and inner-fold metrics); at the end the
  parent gets the search space, budget, N, the Sharpe variance, Optuna's optimisation-history and
  parameter-importance plots, and ``reports/tuned-params.yaml``.
* Every evaluated trial goes into the trial ledger (``training.trials``, origin ``tune``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from qt.config import Params, load_params
from qt.errors import DataError
from qt.paths import StatePaths
from training.tune import (
    TuneData,
    bind_study_to_data,
    check_space,
    decode,
    load_tune_data,
    make_objective,
    open_study,
    out_of_selection_sharpes,
    prediction_interval,
    sharpe_interval,
    study_statistics,
    trial_params,
)

log = logging.getLogger(__name__)
TUNED_PARAMS = "tuned-params.yaml"
STUDY_TAG = "qt.tune.study"
PARENT_TAG = "qt.tune.parent"  # on the study's parent run only (children carry STUDY_TAG too)


def experiment_id(client, params: Params, paths: StatePaths) -> str:
    name = f"{params.train.model_name}-tune"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=paths.mlflow_artifacts.resolve().as_uri())


def parent_run(client, params: Params, paths: StatePaths, study: str) -> str:
    """The study's parent run id: the existing one (a resumption) or a new one."""
    exp = experiment_id(client, params, paths)
    found = client.search_runs([exp], filter_string=f"tags.`{STUDY_TAG}` = '{study}' and tags.`{PARENT_TAG}` = 'true'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(exp, run_name=f"tune-{study}", tags={STUDY_TAG: study, PARENT_TAG: "true"}).info.run_id


def _trial_recorder(client, parent: str, exp: str, params: Params, paths: StatePaths, data: TuneData, study: str):
    """``on_trial`` of the objective: an MLflow child run and a ledger row per evaluated trial."""
    from executor.backtest import bars_per_year
    from qt.timeframes import timeframe_ms
    from training.trials import Trial, TrialLedger, decision_digest, model_digest

    ledger = TrialLedger(paths.trials_ledger)
    ann = math.sqrt(bars_per_year(timeframe_ms(params.data.timeframe)))

    def record(trial, values: dict, folds: list[dict], tp: Params) -> None:
        sharpe = float(np.mean([f["sharpe"] for f in folds])) if folds else 0.0
        run = client.create_run(exp, run_name=f"{study}-trial-{trial.number}",
                                tags={"mlflow.parentRunId": parent, STUDY_TAG: study, "qt.tune.trial": str(trial.number)})
        rid = run.info.run_id
        for path, value in values.items():
            client.log_param(rid, path, json.dumps(value) if isinstance(value, list) else value)
        for f in folds:
            client.log_metric(rid, "fold_sharpe", f["sharpe"], step=f["fold"])
            client.log_metric(rid, "fold_sharpe_annualised", f["sharpe"] * ann, step=f["fold"])
            client.log_metric(rid, "fold_trades", f["trades"], step=f["fold"])
            client.log_metric(rid, "fold_net_return", f["net_return"], step=f["fold"])
        client.log_metric(rid, "mean_fold_sharpe", sharpe)
        if folds:
            client.log_metric(rid, "mean_fold_sharpe_se", sharpe_interval(folds)["se"])
        client.log_metric(rid, "folds_scored", len(folds))
        client.set_terminated(rid)
        ledger.record(Trial(f"{model_digest(tp)}/tune-{data.key()}", decision_digest(tp), "tune", sharpe,
                            sum(f["bars"] for f in folds), params.train.model_name, rid))

    return record


def run_worker(params: Params, paths: StatePaths, lake: Path, study_name: str, n_trials: int,
               timeout: float | None, worker: int, parent: str, callbacks=()) -> None:
    """One process's share of the study: ``n_trials`` trials (or until ``timeout`` seconds)."""
    import optuna
    from mlflow.tracking import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    exp = experiment_id(client, params, paths)
    data = load_tune_data(params, paths, lake)
    study = open_study(study_name, paths, params.tune, worker=worker)
    objective = make_objective(params, data, params.tune,
                               on_trial=_trial_recorder(client, parent, exp, params, paths, data, study_name))
    pid = os.getpid()

    def attributed(trial):  # which worker and process ran it: the study says where its N came from
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("pid", pid)
        return objective(trial)

    study.optimize(attributed, n_trials=n_trials, timeout=timeout, catch=(DataError,), callbacks=list(callbacks),
                   gc_after_trial=True)


class Progress:
    """trial k/N, best so far and ETA: a rich bar on a terminal, one line per trial otherwise."""

    def __init__(self, total: int, already: int, stream=None):
        self.total, self.already, self.t0 = total, already, time.perf_counter()
        self.stream = stream or sys.stderr
        self.bar = None
        if self.stream.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("tune"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                           TimeRemainingColumn())
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def __call__(self, study, trial) -> None:
        done = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]) - self.already
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:
            best = "-"
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * max(self.total - done, 0)
        if self.bar is not None:
            self.bar.update(self.task, completed=min(done, self.total), description=f"best {best}")
            return
        value = "-" if trial.value is None or not math.isfinite(trial.value) else f"{trial.value:.4f}"
        print(f"tune: trial {done}/{self.total} #{trial.number} {trial.state.name.lower()} value {value} "
              f"best {best} elapsed {elapsed:.0f}s eta {eta:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _start_workers(k: int, shares: list[int], params_file: Path, paths: StatePaths, lake: Path, study: str,
                   timeout: float | None, parent: str) -> list[subprocess.Popen]:
    procs = []
    env = {**os.environ, **paths.tool_env()}
    for w in range(1, k):
        if shares[w] <= 0:
            continue
        cmd = [sys.executable, "-m", "training.tune_run", "--worker", str(w), "--params", str(params_file),
               "--lake", str(lake), "--study", study, "--trials", str(shares[w]), "--parent-run", parent]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        log_file = open(paths.logs / f"tune-{study}-worker{w}.log", "ab")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT))
        log_file.close()
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop the worker processes we started, by PID: SIGTERM, then SIGKILL after 10 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _search_in_processes(params: Params, paths: StatePaths, lake: Path, study_name: str, shares: list[int],
                         timeout: float | None, parent: str, progress: Progress, params_file: Path) -> None:
    """Share 0 here, the others in ``python -m training.tune_run`` processes, stopped by PID at the end."""
    procs: list[subprocess.Popen] = []
    try:
        procs = _start_workers(len(shares), shares, params_file, paths, lake, study_name, timeout, parent)
        if shares[0] > 0:
            run_worker(params, paths, lake, study_name, shares[0], timeout, 0, parent, callbacks=[progress])
        for p in procs:
            while p.poll() is None:
                time.sleep(1.0)
            if p.returncode != 0:
                raise DataError(f"tune worker (pid {p.pid}) exited {p.returncode}; see "
                                f"{paths.logs}/tune-{study_name}-worker*.log")
    finally:
        _stop(procs)


def _search_on_dask(params: Params, paths: StatePaths, lake: Path, study_name: str, shares: list[int],
                    timeout: float | None, parent: str, progress: Progress) -> None:
    """``runner.task_runner: dask``: share 0 here (it drives the progress bar), each other share a
    task on the cluster of ``runner:`` (a ``LocalCluster`` of one process per extra worker, stopped
    on exit, or the scheduler at ``runner.dask_address``, whose workers must see this state
    directory and lake at the same paths: the study, MLflow and the ledger live there)."""
    from qt.cluster import dask_client

    paths, lake = StatePaths(paths.home.resolve()), lake.resolve()  # a worker's cwd is not ours
    extra = [w for w in range(1, len(shares)) if shares[w] > 0]
    if not extra:
        if shares[0] > 0:
            run_worker(params, paths, lake, study_name, shares[0], timeout, 0, parent, callbacks=[progress])
        return
    with dask_client(params.runner, n_workers=len(extra)) as client:
        futures = {w: client.submit(run_worker, params, paths, lake, study_name, shares[w], timeout, w, parent,
                                    key=f"tune-{study_name}-worker{w}-{parent}", pure=False) for w in extra}
        try:
            if shares[0] > 0:
                run_worker(params, paths, lake, study_name, shares[0], timeout, 0, parent, callbacks=[progress])
            for w, fut in futures.items():
                exc = fut.exception()  # waits for it
                if exc is not None:
                    raise DataError(f"tune worker {w} on the Dask cluster failed: {type(exc).__name__}: {exc}")
        finally:
            client.cancel(list(futures.values()))


def run_search(params: Params, paths: StatePaths, lake: Path, study_name: str, n_trials: int,
               timeout: float | None = None, workers: int = 1) -> dict:
    """Run (or resume) the study with ``n_trials`` more trials over ``workers`` processes (or Dask
    tasks, ``runner.task_runner: dask``) ->
    ``{statistics, best, parent_run_id, seconds}``; writes ``reports/tuned-params.yaml``."""
    from mlflow.tracking import MlflowClient

    check_space(params, params.tune)
    t0 = time.perf_counter()
    paths.ensure()
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    parent = parent_run(client, params, paths, study_name)
    data = load_tune_data(params, paths, lake)  # fails early (no features, too few bars) before any process starts
    study = open_study(study_name, paths, params.tune)
    bind_study_to_data(study, data.key())
    already = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    shares = [n_trials // workers + (1 if w < n_trials % workers else 0) for w in range(workers)]
    params_file = paths.home / "tune" / f"{study_name}.params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    progress = Progress(n_trials, already)
    try:
        if params.runner.task_runner == "dask":
            _search_on_dask(params, paths, lake, study_name, shares, timeout, parent, progress)
        else:
            _search_in_processes(params, paths, lake, study_name, shares, timeout, parent, progress, params_file)
    finally:
        progress.close()
    study = open_study(study_name, paths, params.tune)
    stats = study_statistics(study)
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not completed:
        raise DataError(f"study {study_name}: no trial completed ({stats['pruned']} pruned, {stats['failed']} "
                        f"failed); nothing to select - see {paths.logs}")
    best = study.best_trial
    selected = decode(best.params, params.tune)
    tuned = trial_params(params, selected)
    out = write_tuned_params(tuned, paths)
    _log_parent(client, parent, study, params, stats, out, paths, n_trials, timeout, workers)
    folds = best.user_attrs.get("folds", [])
    grid = [[f["sharpe"] for f in t.user_attrs.get("folds", [])] for t in completed]
    oos = out_of_selection_sharpes(np.array([g for g in grid if len(g) == len(folds)]))
    return {"statistics": stats, "best": {"trial": best.number, "value": float(best.value), "params": selected,
                                          "folds": folds, "interval": sharpe_interval(folds),
                                          "out_of_selection": None if oos is None else oos.tolist()},
            "tuned_params": str(out), "parent_run_id": parent, "trials_data_end": str(data.end),
            "trials_cut": str(data.cut), "seconds": round(time.perf_counter() - t0, 1),
            "params": tuned}


def holdout_against_study(paths: StatePaths, best: dict, timeframe: str) -> dict:
    """The selected configuration's holdout Sharpe (the evaluate stage's strategy returns, net of
    costs) beside what the study said of it: the score and its confidence interval, the
    out-of-selection estimate (``training.tune.out_of_selection_sharpes``) and the prediction
    interval for a period of the holdout's length, per bar and annualised. ``inside`` False means
    the unseen data delivered what the study's own uncertainty does not cover."""
    import pandas as pd

    from executor.backtest import bars_per_year
    from qt.timeframes import timeframe_ms
    from training.gates import compute_sharpe
    from training.stages import RETURNS

    returns = pd.read_parquet(paths.evaluation / RETURNS)["strategy"].fillna(0.0).to_numpy()
    sharpe = float(compute_sharpe(returns))
    oos = best.get("out_of_selection")
    pi = prediction_interval(best["folds"], len(returns), None if not oos else float(np.mean(oos)))
    score = best["interval"]
    ann = math.sqrt(bars_per_year(timeframe_ms(timeframe)))
    per_bar = {"holdout_sharpe": sharpe, "inner_sharpe": score["sharpe"], "inner_ci95": [score["low"], score["high"]],
               "out_of_selection_sharpe": pi["center"], "prediction95": [pi["low"], pi["high"]]}
    return {**per_bar, "inside": bool(pi["low"] <= sharpe <= pi["high"]), "between_fold_variance": pi["tau2"],
            "t_quantile": pi["quantile"], "folds": pi["folds"], "holdout_bars": pi["horizon_bars"],
            "annualised": {k: [x * ann for x in v] if isinstance(v, list) else v * ann for k, v in per_bar.items()}}


def write_tuned_params(tuned: Params, paths: StatePaths) -> Path:
    """The selected configuration as a full params.yaml (loads back to the same ``Params``)."""
    out = paths.reports / TUNED_PARAMS
    paths.reports.mkdir(parents=True, exist_ok=True)
    text = ("# Selected by `qt tune` (reports/summary.json's tune block says which study and trial).\n"
            "# Use it as it is: qt run --params " + str(out) + "\n")
    out.write_text(text + yaml.safe_dump(tuned.model_dump(mode="json"), sort_keys=False))
    if load_params(out) != tuned:
        raise DataError(f"{out} does not load back to the selected configuration")
    return out


def _log_parent(client, parent: str, study, params: Params, stats: dict, tuned_file: Path, paths: StatePaths,
                n_trials: int, timeout: float | None, workers: int) -> None:
    """Search space, budget, N, variance, the tuned params file and Optuna's plots on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import (
        plot_optimization_history,
        plot_param_importances,
    )

    client.log_dict(parent, {"space": [d.model_dump(mode="json") for d in params.tune.space]}, "search_space.json")
    client.log_dict(parent, {"trials": n_trials, "timeout_seconds": timeout, "workers": workers}, "budget.json")
    for key in ("n_trials", "completed", "pruned", "failed"):
        client.log_metric(parent, key, stats[key])
    if stats["sharpe_variance"] is not None:
        client.log_metric(parent, "trial_sharpe_variance", stats["sharpe_variance"])
    client.log_metric(parent, "best_mean_fold_sharpe", float(study.best_value))
    client.log_artifact(parent, str(tuned_file))
    figures = paths.reports / "tune"
    figures.mkdir(parents=True, exist_ok=True)
    plot_optimization_history(study)
    plt.savefig(figures / "optimization_history.png", bbox_inches="tight")
    plt.close("all")
    client.log_artifact(parent, str(figures / "optimization_history.png"))
    try:
        plot_param_importances(study)
        plt.savefig(figures / "param_importances.png", bbox_inches="tight")
        client.log_artifact(parent, str(figures / "param_importances.png"))
    except (ValueError, RuntimeError) as exc:  # too few completed trials, or no parameter varies
        note = f"parameter-importance plot skipped: {exc}"
        log.warning("%s", note)
        client.set_tag(parent, "param_importance", note[:500])
    finally:
        plt.close("all")
    client.set_terminated(parent)  # a resumption logs to it again

def _worker_main(argv: list[str] | None = None) -> int:
    """Entry of the extra worker processes ``run_search`` starts."""
    ap = argparse.ArgumentParser(prog="python -m training.tune_run")
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--trials", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--parent-run", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    run_worker(load_params(a.params), StatePaths.from_env(), Path(a.lake), a.study, a.trials, a.timeout, a.worker,
               a.parent_run)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
