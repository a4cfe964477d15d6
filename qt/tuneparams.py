"""``tune:`` of ``params.yaml``: the search space and budget of ``qt tune`` (``training.tune``).

Why a module of its own: the search space names other sections' keys (``train.xgboost.max_depth``,
``signal.buy_threshold``, ...), so it is a list of dotted paths with a range each, validated here
once, and ``qt/config.py`` only carries ``Params.tune``. A path that does not name a key of
``Params`` is refused when the search starts (``training.tune.trial_params``), in one line.

Each dimension is one of:

* ``{path: train.xgboost.max_depth, low: 2, high: 6, kind: int}``
* ``{path: train.xgboost.learning_rate, low: 0.01, high: 0.3, kind: float, log: true}``
* ``{path: train.members, choices: [[xgboost], [lightgbm], [xgboost, lightgbm]], kind: categorical}``

Defaults search the two fast members (xgboost, lightgbm) only: the neural members are allowed (put
them in a ``train.members`` choice) but each fit costs tens of seconds, too slow for many trials.
They also search the label (``labels.target``: the forward return or the executor's own trade) and
one feature family (``features.candle_shape``): neither adds a fit, so a trial costs about the same.
A ``features.*`` dimension must be categorical (``training.tune_features``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TuneDimension(_Frozen):
    """One searched key: a dotted path into params.yaml and its range (or choices)."""

    path: str = Field(min_length=3)
    kind: Literal["int", "float", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> "TuneDimension":
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"tune.space {self.path}: a categorical dimension needs choices")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"tune.space {self.path}: needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError(f"tune.space {self.path}: a log range needs low > 0")
        return self


def _default_space() -> list[TuneDimension]:
    d = TuneDimension
    return [
        d(path="train.members", kind="categorical", choices=[["xgboost"], ["lightgbm"], ["xgboost", "lightgbm"]]),
        d(path="train.xgboost.max_depth", kind="int", low=2, high=6),
        d(path="train.xgboost.learning_rate", kind="float", low=0.01, high=0.3, log=True),
        d(path="train.xgboost.n_estimators", kind="int", low=50, high=300, step=50),
        d(path="train.lightgbm.num_leaves", kind="int", low=4, high=31),
        d(path="train.lightgbm.learning_rate", kind="float", low=0.01, high=0.3, log=True),
        d(path="train.lightgbm.n_estimators", kind="int", low=50, high=300, step=50),
        d(path="signal.buy_threshold", kind="float", low=0.51, high=0.7),
        d(path="signal.sell_threshold", kind="float", low=0.3, high=0.49),
        d(path="risk.stop_loss_pct", kind="float", low=0.01, high=0.08),
        d(path="risk.take_profit_pct", kind="float", low=0.02, high=0.16),
        d(path="labels.horizon_bars", kind="int", low=1, high=12),
        # the decision layer: per-symbol timing or the cross-sectional portfolio, and the cost filter
        d(path="signal.mode", kind="categorical", choices=["timing", "rank"]),
        d(path="signal.top_k", kind="int", low=1, high=3),
        d(path="signal.rebalance_bars", kind="categorical", choices=[4, 12, 24]),
        d(path="signal.min_edge_bps", kind="float", low=0.0, high=40.0),
        # measured: a trial costs about the same with these two (the union is computed once per study)
        d(path="labels.target", kind="categorical", choices=["forward_return", "triple_barrier"]),
        d(path="features.candle_shape", kind="categorical", choices=[False, True]),
    ]


class TuneParams(_Frozen):
    """The search space and budget of ``qt tune`` (the CLI's --trials / --timeout override the budget)."""

    trials: int = Field(30, ge=1, le=100_000)
    timeout_seconds: float | None = Field(None, gt=0.0)  # None = until ``trials`` are done
    # Walk-forward folds per trial (None = train.folds): the first calibrates the ensemble weights and
    # the return map out of fold, the others are traded and scored. Fewer keeps a trial cheap.
    folds: int | None = Field(None, ge=2, le=20)
    # MedianPruner: no pruning before this many trials completed / before this fold (0-based).
    pruner_startup_trials: int = Field(5, ge=0)
    pruner_warmup_folds: int = Field(1, ge=0)
    sampler_seed: int | None = 42  # None = a random TPE seed per process
    space: list[TuneDimension] = Field(default_factory=_default_space)

    @model_validator(mode="after")
    def _check_paths(self) -> "TuneParams":
        seen = [dim.path for dim in self.space]
        twice = sorted({p for p in seen if seen.count(p) > 1})
        if twice:
            raise ValueError(f"tune.space lists {twice} twice; list each key once")
        return self
