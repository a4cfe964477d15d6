"""``qt models``: the registry seen and steered by a person (list, approve, rollback).

Who moved the champion is recorded as tags on the version, so the registry is its own audit
log: ``approval`` (auto | pending | approved | forced), ``approved_by``/``approved_at``,
``approval_override`` (what --force overrode), ``previous_champion`` (the version it
replaced: rollback walks this chain back), ``restored_by``/``rolled_back_by``. Setting the
``champion`` alias in the MLflow UI is an approval too, but leaves no tag; the list says so
rather than guess who did it.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.context import load_context
from qt.errors import UserError
from training.approval import approval_label, approval_refusal, gate_summary, rollback_target

models_app = typer.Typer(no_args_is_help=True, help="Registered versions: list, approve, rollback.")

ParamsOpt = Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")]
_METRICS = (("sharpe", "holdout_strategy_sharpe", "{:.2f}"), ("net_return", "holdout_strategy_net_return", "{:.2%}"),
            ("max_dd", "holdout_strategy_max_drawdown", "{:.2%}"), ("trades", "holdout_strategy_trades", "{:.0f}"))



# -- commands -------------------------------------------------------------------------------------
def _registry(params_path):
    from training.registry import ModelRegistry

    p, paths = load_context(params_path, None, None, None, None, None)
    return ModelRegistry(paths.tracking_uri, p.train.model_name, artifact_location=paths.mlflow_artifacts)


def _trials_line(params_path) -> str:
    """The deflated Sharpe's N for the next promotion and where it comes from (``training.trials``)."""
    from training.trials import TrialLedger, describe

    _, paths = load_context(params_path, None, None, None, None, None)
    return describe(TrialLedger(paths.trials_ledger).summary())


def version_rows(registry) -> list[dict]:
    """One row per version for ``qt models list`` (also its ``--json`` output)."""
    champion = registry.champion_version()
    rows = []
    for v in registry.list_versions():
        metrics = registry.run_metrics(v["run_id"])
        rows.append({
            "version": v["version"], "aliases": v["aliases"], "created": v["created"].isoformat(timespec="seconds"),
            "gates": gate_summary(v["tags"]), "approval": approval_label(v["tags"], v["version"] == champion),
            "previous_champion": v["tags"].get("previous_champion"),
            **{name: metrics.get(key) for name, key, _ in _METRICS},
        })
    return rows


@models_app.command("list")
def list_versions(params: ParamsOpt = None,
                  as_json: Annotated[bool, typer.Option("--json", help="rows as JSON")] = False) -> None:
    """Versions, aliases, creation time, gate results, approval and key holdout metrics."""
    registry = _registry(params)
    rows = version_rows(registry)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no registered versions of {registry.model_name!r} yet; run `qt promote`")
        return
    from rich.console import Console
    from rich.table import Table

    champion = registry.champion_version()
    table = Table(title=f"{registry.model_name}: " + (f"champion v{champion}" if champion else "no champion"))
    for col in ("version", "aliases", "created", "gates", "approval", *(m[0] for m in _METRICS)):
        table.add_column(col, overflow="fold")
    for r in rows:
        shown = [fmt.format(r[name]) if r[name] is not None else "-" for name, _, fmt in _METRICS]
        table.add_row(r["version"], ", ".join(r["aliases"]) or "-", r["created"], r["gates"], r["approval"], *shown)
    Console().print(table)
    typer.echo(_trials_line(params))


@models_app.command("approve")
def approve(version: Annotated[str, typer.Argument(help="registered version number")],
            by: Annotated[str, typer.Option("--by", help="who approves (recorded)")],
            force: Annotated[bool, typer.Option("--force", help="approve although its gates failed (recorded)")] = False,
            params: ParamsOpt = None) -> None:
    """Make VERSION the champion, recording who approved it and which champion it replaces."""
    from training.registry import utc_now

    if not by.strip():
        raise UserError("--by is empty; name who approves, e.g. --by alice")
    registry = _registry(params)
    registry.require_version(version)
    if registry.champion_version() == version:
        typer.echo(f"v{version} is already the champion; nothing changed")
        return
    tags = registry.version_tags(version)
    refusal = approval_refusal(version, tags)
    if refusal and not force:
        raise UserError(f"refusing to approve: {refusal}; pass --force to override (the override is recorded)")
    now = utc_now()
    stamp = {"approval": "forced" if refusal else "approved", "approved_by": by, "approved_at": now}
    if refusal:
        stamp["approval_override"] = f"forced by {by} at {now}: {refusal}"
    previous = registry.set_champion(version, stamp)
    typer.echo(f"v{version} is the champion now (approved by {by}{', FORCED' if refusal else ''}); "
               + (f"previous champion v{previous}: `qt models rollback` restores it" if previous
                  else "there was no champion before"))


@models_app.command("rollback")
def rollback(by: Annotated[Optional[str], typer.Option("--by", help="who rolls back (default: login)")] = None,
             params: ParamsOpt = None) -> None:
    """Restore the champion the current one replaced."""
    from training.registry import utc_now

    who = by or login()
    registry = _registry(params)
    current = registry.champion_version()
    target = rollback_target(current, registry.version_tags(current) if current else {})
    now = utc_now()
    registry.restore_champion(target, {"restored_by": who, "restored_at": now})
    registry.set_version_tags(current, {"rolled_back_by": who, "rolled_back_at": now})
    typer.echo(f"champion rolled back from v{current} to v{target} by {who}")


def login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
