"""Who may move the champion, read from the registry's tags: pure rules, no I/O.

``qt models`` (list, approve, rollback) and the dashboard's champion panel show the same gate
summary and approval label, and approve/rollback refuse for the same reasons, because both
read these functions. The tags themselves are written by ``training.registry``.
"""

from __future__ import annotations

from qt.errors import UserError

UI_APPROVAL = "approved in MLflow UI (no tag)"


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
