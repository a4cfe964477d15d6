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

from qt.errors import UserError

models_app = typer.Typer(no_args_is_help=True, help="Registered versions: list, approve, rollback.")

ParamsOpt = Annotated[Optional[Path], typer.Option("--params", help="params file (default: ./params.yaml)")]
UI_APPROVAL = "approved in MLflow UI (no tag)"
_METRICS = (("sharpe", "holdout_strategy_sharpe", "{:.2f}"), ("net_return", "holdout_strategy_net_return", "{:.2%}"),
            ("max_dd", "holdout_strategy_max_drawdown", "{:.2%}"), ("trades", "holdout_strategy_trades", "{:.0f}"))


# -- pure decisions -----------------------------------------------------------------------------
def gate_summary(tags: dict[str, str]) -> str:
    """``passed`` | ``FAILED: name, ...`` | ``not gated`` from the version's gate tags."""
    state = tags.get("gates_passed")
    if state is None:
        return "not gated"
    if state == "true":
        return "passed"
    failed = sorted(k.removeprefix("gate.") for k, v in tags.items() if k.startswith("gate.") and v.startswith("FAIL"))
    return "FAILED: " + ", ".join(failed)


def approval_label(tags: dict[str, str], is_champion: bool) -> str:
    """How the version got (or may get) the champion alias, from what the tags record."""
    if tags.get("approved_by"):
        label = f"approved by {tags['approved_by']} {tags.get('approved_at', '')}".rstrip()
        if tags.get("approval") == "forced":
            label += " (FORCED past failed gates)"
    elif tags.get("approval") == "auto":
        label = "auto (gates passed)"
    elif is_champion:
        return UI_APPROVAL
    elif tags.get("approval") == "pending":
        label = "pending"
    else:
        label = "-"
    if is_champion and tags.get("restored_by"):
        label += f"; restored by {tags['restored_by']} {tags.get('restored_at', '')}".rstrip()
    if not is_champion and tags.get("rolled_back_by"):
        label += f"; rolled back by {tags['rolled_back_by']} {tags.get('rolled_back_at', '')}".rstrip()
    return label


def approval_refusal(version: str, tags: dict[str, str]) -> str | None:
    """Why ``version`` must not become champion without --force (None: its gates passed)."""
    state = gate_summary(tags)
    if state == "passed":
        return None
    if state == "not gated":
        return f"v{version} has no gate results (it never went through `qt promote`)"
    return f"v{version} failed its gates ({state.removeprefix('FAILED: ')})"


def rollback_target(champion: str | None, champion_tags: dict[str, str]) -> str:
    """The version rollback restores; UserError (one line) when there is none to restore."""
    if champion is None:
        raise UserError("there is no champion, so nothing to roll back")
    previous = champion_tags.get("previous_champion")
    if not previous:
        raise UserError(f"no previous champion is recorded for v{champion} (the first champion, or set in the "
                        f"MLflow UI); choose one with `qt models approve VERSION --by NAME`")
    return previous


# -- commands -------------------------------------------------------------------------------------
def _registry(params_path):
    from cli.main import _context
    from training.registry import ModelRegistry

    p, paths = _context(params_path, None, None, None, None, None)
    return ModelRegistry(paths.tracking_uri, p.train.model_name, artifact_location=paths.mlflow_artifacts)


def _trials_line(params_path) -> str:
    """The deflated Sharpe's N for the next promotion and where it comes from (``training.trials``)."""
    from cli.main import _context
    from training.trials import TrialLedger, describe

    _, paths = _context(params_path, None, None, None, None, None)
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

    who = by or _login()
    registry = _registry(params)
    current = registry.champion_version()
    target = rollback_target(current, registry.version_tags(current) if current else {})
    now = utc_now()
    registry.restore_champion(target, {"restored_by": who, "restored_at": now})
    registry.set_version_tags(current, {"rolled_back_by": who, "rolled_back_at": now})
    typer.echo(f"champion rolled back from v{current} to v{target} by {who}")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
