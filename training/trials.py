"""The trial ledger: every (model, decision config) ever scored on a holdout, for the deflated Sharpe.

The deflated Sharpe ratio (``training.gates``) asks how likely the best of N tries would look
this good by luck, so N must count every try a person could have picked the winner from - not
only the training configurations that happen to be in today's MLflow store. A **trial** is one
distinct pair

* ``model_id`` - what produced the predictions: the digest of the settings that change a
  prediction (``model_digest``: features, labels, train, timeframe) plus the content hash of
  the frame it was fitted on, so a retrain on new data is a new model and a rerun of the same
  fit is not;
* ``decision_digest`` - what turns predictions into trades and costs (``decision_digest``:
  signal, risk, costs),

scored on a holdout by any path: the evaluate stage, a promote, the champion re-evaluated on a
challenger's holdout, ``qt backtest``, and every ``qt tune`` trial (scored on inner folds, not the
holdout, but each is a configuration a person could have picked). Ports, notifications, paths, runners and serving change
neither and are left out, so cosmetic edits do not inflate N. Gates are left out too: a
threshold decides what to do with a result, not what the result is.

The ledger is a small SQLite file under the state directory (``StatePaths.trials_ledger``),
apart from the MLflow store, so ``make clean-state`` keeps it (only ``FORGET_TRIALS=1`` deletes
it). Recording the same pair again only bumps its ``seen`` count and ``last_seen``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from qt.config import Params

ORIGINS = ("evaluate", "promote", "champion_reevaluation", "backtest", "tune",
           "ablate")  # tune: a `qt tune` trial; ablate: an arm of `qt ablate`
# train settings that change how fast a model fits or what it is called, never what it predicts
_TRAIN_COSMETIC = ("n_jobs", "model_name")
# risk settings only the live executor reads (the exchange account's set-up): no backtest trade moves
_RISK_LIVE_ONLY = ("margin_mode",)


def _digest(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def model_digest(params: Params) -> str:
    """Digest of every setting that changes a prediction (not the data: see ``model_identity``)."""
    train = {k: v for k, v in params.train.model_dump(mode="json").items() if k not in _TRAIN_COSMETIC}
    labels = params.labels.model_dump(mode="json")
    if labels.pop("target") == "triple_barrier":  # the barriers are then part of the label itself
        r = params.risk
        labels["target"] = {"triple_barrier": [r.stop_loss_pct, r.take_profit_pct, r.max_holding_bars]}
    # (the forward-return target adds nothing: digests from before labels.target existed still match)
    return _digest({"features": params.features.model_dump(mode="json"), "labels": labels, "train": train,
                    "timeframe": params.data.timeframe})


def decision_digest(params: Params) -> str:
    """Digest of every setting that turns the same predictions into other trades or returns."""
    blob = {section: getattr(params, section).model_dump(mode="json") for section in ("signal", "risk", "costs")}
    blob["risk"] = {k: v for k, v in blob["risk"].items() if k not in _RISK_LIVE_ONLY}
    if blob["costs"].get("fill_model") == "fixed":  # the default leaves digests from before the option unchanged
        del blob["costs"]["fill_model"]
    blob["costs"].pop("book", None)  # where the local exchange's book lives: the bar backtest refuses book fills
    return _digest(blob)


def model_identity(model_digest_value: str | None, training_frame_sha256: str | None, fallback: str) -> str:
    """``model_digest/frame`` when both are known; else ``fallback`` (a run id or model URI: a model
    logged before the ledger existed is still one model, just not matched across reruns)."""
    if model_digest_value and training_frame_sha256:
        return f"{model_digest_value}/{str(training_frame_sha256)[:16]}"
    return fallback


@dataclass(frozen=True)
class Trial:
    model_id: str
    decision_digest: str
    origin: str  # one of ORIGINS: the path that first scored it
    sharpe: float  # per-bar Sharpe of the strategy on that holdout (not annualised)
    bars: int  # bars of the holdout it was scored on; 0 when not reported (qt backtest)
    model_name: str = ""
    run_id: str = ""


_SCHEMA = """CREATE TABLE IF NOT EXISTS trials (
    model_id TEXT NOT NULL, decision_digest TEXT NOT NULL, origin TEXT NOT NULL,
    sharpe REAL, bars INTEGER, model_name TEXT, run_id TEXT,
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, seen INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (model_id, decision_digest))"""


class TrialLedger:
    """Thin SQLite adapter over the ledger file; every call opens, commits and closes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute(_SCHEMA)
        return con

    def record(self, trial: Trial) -> bool:
        """Add the trial; True when it is new, False when the pair was scored before."""
        if trial.origin not in ORIGINS:
            raise ValueError(f"trial origin {trial.origin!r} is not one of {ORIGINS}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        sharpe = float(trial.sharpe) if np.isfinite(trial.sharpe) else None
        con = self._connect()
        try:
            with con:
                cur = con.execute(
                    "INSERT OR IGNORE INTO trials (model_id, decision_digest, origin, sharpe, bars, model_name, "
                    "run_id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (trial.model_id, trial.decision_digest, trial.origin, sharpe, int(trial.bars),
                     trial.model_name, trial.run_id, now, now))
                if cur.rowcount == 0:
                    con.execute("UPDATE trials SET seen = seen + 1, last_seen = ? WHERE model_id = ? AND "
                                "decision_digest = ?", (now, trial.model_id, trial.decision_digest))
                    return False
                return True
        finally:
            con.close()

    def summary(self) -> dict:
        """``{n_trials, ledger, by_origin, sharpe_variance}``: N for the deflated Sharpe (>= 1) and
        where it came from. ``sharpe_variance`` is the sample variance of the trials' per-bar
        Sharpes (None below two trials), shown for a person to compare with the null's 1/(T-1)."""
        if not self.path.is_file():
            return {"n_trials": 1, "recorded": 0, "ledger": str(self.path), "by_origin": {}, "sharpe_variance": None}
        con = self._connect()
        try:
            rows = con.execute("SELECT origin, sharpe FROM trials").fetchall()
        finally:
            con.close()
        sharpes = [s for _, s in rows if s is not None]
        return {"n_trials": max(1, len(rows)), "recorded": len(rows), "ledger": str(self.path),
                "by_origin": dict(sorted(Counter(o for o, _ in rows).items())),
                "sharpe_variance": float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None}


def describe(summary: dict) -> str:
    """One line: N and where it came from, for ``qt models list`` and the promote report."""
    origins = ", ".join(f"{n} {o}" for o, n in summary["by_origin"].items()) or "none recorded yet"
    return f"deflated Sharpe trials N={summary['n_trials']} ({origins}; ledger {summary['ledger']})"
