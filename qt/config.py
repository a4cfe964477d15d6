"""Typed, frozen configuration loaded once from ``params.yaml``.

``params.yaml`` is also the file DVC tracks as params, so every number that
changes a decision lives here and a change to it re-runs the affected stages.
Unknown keys are rejected (``extra="forbid"``): a typo must stop the program at
start-up, not silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qt.errors import ConfigError
from qt.altparams import AltFeatureFields, AltParams
from qt.riskparams import RiskParams
from qt.venueparams import CollectParams, ExecuteParams
from qt.tuneparams import TuneParams


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(_Frozen):
    """What the pipeline trades on: the universe, the bar size and the period."""

    source: str = "synthetic:7"
    symbols: list[str] = Field(default_factory=lambda: ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"], min_length=1)
    timeframe: Literal["1m", "5m", "15m", "1h", "4h", "1d"] = "1h"
    start: str | None = None  # ISO date, inclusive; None = everything the source has
    end: str | None = None  # ISO date, exclusive; None = everything the source has


class SyntheticParams(_Frozen):
    """The project's own market generator (see ``data.synthetic``)."""

    bars: int = Field(6000, ge=300)
    start: str = "2023-01-01"
    # Strength of the planted, learnable drift (0 = pure noise, the negative control).
    signal_strength: float = Field(0.2, ge=0.0, le=1.0)
    # Bars of past return the planted drift looks at (momentum lookback).
    signal_lookback_bars: int = Field(24, ge=2)
    correlation: float = Field(0.5, ge=0.0, lt=1.0)
    base_volatility: float = Field(0.008, gt=0.0, lt=0.2)  # per-bar sigma in calm regime


class ValidationParams(_Frozen):
    """Data-quality thresholds for the Great Expectations suite."""

    # A bar that jumps away from its neighbours and straight back (|log move| above this both
    # ways, with a price gap at the open) is a bad print, not a market move: an error.
    max_spike_log_return: float = Field(0.3, gt=0.0)
    # A |log return| above this many trailing standard deviations is flagged (a warning:
    # real crashes happen); the trailing window excludes the bar itself.
    outlier_sigma: float = Field(10.0, gt=0.0)
    outlier_window_bars: int = Field(168, ge=10)
    # Freshness: a symbol whose last candle is more than this many bars older than the
    # collection time is an error (None = not checked, e.g. for historical data sets).
    max_staleness_bars: int | None = Field(None, ge=0)
    # |funding rate| per interval above this is an error (Binance caps are far lower).
    max_abs_funding_rate: float = Field(0.05, gt=0.0)
    # Missing bars are real exchange outages: warnings, not errors, unless this is False.
    allow_gaps: bool = True


class HtfFeatureParams(_Frozen):
    """Indicators on completed higher-timeframe bars aggregated from the base candles
    (features.htf). ``base_timeframe`` must be the candles' bar size (checked at compute time):
    the warm-up in base bars is ``timeframe / base_timeframe`` times the HTF warm-up."""

    base_timeframe: Literal["1m", "5m", "15m", "1h", "4h"] = "1h"
    timeframe: Literal["5m", "15m", "1h", "4h", "1d"] = "4h"
    rsi: list[int] = Field(default_factory=list)
    atr: list[int] = Field(default_factory=list)
    log_return: list[int] = Field(default_factory=list)


class FeatureParams(AltFeatureFields):
    """The declared feature set. Column names are ``<indicator>_<params>`` (alt keys: ``qt.altparams``)."""

    rsi: list[int] = Field(default_factory=lambda: [14])
    ema: list[int] = Field(default_factory=lambda: [12, 26])
    sma: list[int] = Field(default_factory=lambda: [20])
    macd: tuple[int, int, int] = (12, 26, 9)
    bbands: tuple[int, float] = (20, 2.0)
    atr: list[int] = Field(default_factory=lambda: [14])
    log_return: list[int] = Field(default_factory=lambda: [1, 4, 24])
    realised_vol: list[int] = Field(default_factory=lambda: [24])
    volume_z: list[int] = Field(default_factory=lambda: [24])
    adx: list[int] = Field(default_factory=lambda: [14])
    stoch: tuple[int, int, int] = (14, 3, 3)  # (fastk K, slowd D, slowk smoothing S), SMA
    obv_z: list[int] = Field(default_factory=lambda: [24])
    vwap_dist: list[int] = Field(default_factory=lambda: [24])
    # body_frac, upper_wick_frac, lower_wick_frac, range_log. Off by default: with them on, the
    # training positive control (tests/training/test_pipeline.py) fails its bootstrap gate
    # (lower bound -0.46): four more columns the planted drift does not use.
    candle_shape: bool = False
    # Higher-timeframe blocks: off by default (an RSI/ATR on 4h bars needs ~1000 1h bars of
    # warm-up, more than serving's 300-bar window); see features.htf.
    htf: list[HtfFeatureParams] = Field(default_factory=list)
    # Multi-input families, off by default: compute_features needs ``funding`` / ``reference``
    # frames for them (materialisation, serving and the backtest read them from the lake; see
    # features.multi_input).
    funding_last: bool = False
    funding_mean: list[int] = Field(default_factory=list)  # N = funding events, not bars
    basis: bool = False  # log(perp close / spot close); spot candles come in ``reference``
    cross: list[int] = Field(default_factory=list)  # reference logret/beta/corr over N bars
    cross_reference: str = Field("BTC/USDT", min_length=3)
    # Cross-venue family (features.cross_venue), off by default: the same USDT perpetual on Bybit
    # as an extra input (``other_venue``): xv_basis_log, xv_basis_z_N, xv_funding_spread.
    xv: bool = False
    xv_z: list[int] = Field(default_factory=list)  # z-score windows of xv_basis_log, in bars (needs xv)
    # Warm-up length in "memories" (e-folding bars) of the slowest recursive indicator; see
    # features.compute.warmup_bars (and its docstring for the measurement behind the value).
    warmup_memories: float = Field(18.0, gt=0.0, le=100.0)


class LabelParams(_Frozen):
    """What the models learn: features end at bar t, the label reads bars after t only.

    ``target`` picks the label the members are fitted on (``features.labels.training_target``):
    ``forward_return`` (up = the h-bar log return > 0, reads t+1..t+h) or ``triple_barrier``
    (up = the executor's own long trade entered at t+1 made money, reads t+1..t+M+1 with
    M = risk.max_holding_bars). The purge between train and test spans what the label reads
    (``features.labels.label_reach_bars``)."""

    horizon_bars: int = Field(4, ge=1)
    # Also materialise triple-barrier labels (tb_label/tb_return/tb_bars) whose barriers are
    # risk.stop_loss_pct / take_profit_pct / max_holding_bars, replayed with the paper broker's
    # fill rules; costs each symbol its last max_holding_bars + 1 label rows instead of h.
    triple_barrier: bool = True
    target: Literal["forward_return", "triple_barrier"] = "forward_return"

    @model_validator(mode="after")
    def _check_target(self) -> "LabelParams":
        if self.target == "triple_barrier" and not self.triple_barrier:
            raise ValueError("labels.target triple_barrier needs the triple-barrier labels: set labels.triple_barrier: "
                             "true or labels.target: forward_return")
        return self


class CostParams(_Frozen):
    """Costs charged in every backtest and paper fill."""

    fee_rate: float = Field(0.001, ge=0.0, lt=0.05)  # fraction of notional per fill (taker)
    slippage_bps: float = Field(2.0, ge=0.0, lt=500.0)  # adverse price move per fill
    # a resting limit that fills pays the maker rate (executor.paper); None: the taker fee_rate
    maker_fee_rate: float | None = Field(None, ge=0.0, lt=0.05)
    # how a market order's price is found: ``fixed`` = slippage_bps off the reference price;
    # ``book`` = walk a replayed order book's levels (qt.book_walk). Only a caller holding a book
    # can walk it; the bar-based paper broker and backtest refuse ``book`` (they have no book).
    fill_model: Literal["fixed", "book"] = "fixed"
    # the book ``fill_model: book`` walks on the local exchange (``qt exchange serve --params FILE``):
    # a levels.parquet or a directory of them (``qt record-book --from-file``); ``--book`` overrides it
    book: str | None = None


# Hyper-parameters ``train.nhits`` / ``train.patchtst`` may set (passed to the neuralforecast
# constructors by training.deep). The horizon, input size, seed, scaler and loss are set by the
# pipeline itself, so they are not among them.
_DEEP_COMMON_KEYS = frozenset({"max_steps", "learning_rate", "num_lr_decays", "batch_size", "windows_batch_size",
                               "step_size"})
DEEP_HPARAM_KEYS: dict[str, frozenset[str]] = {
    "nhits": _DEEP_COMMON_KEYS | {"stack_types", "n_blocks", "mlp_units", "n_pool_kernel_size", "n_freq_downsample",
                                  "pooling_mode", "interpolation_mode", "dropout_prob_theta", "activation"},
    "patchtst": _DEEP_COMMON_KEYS | {"encoder_layers", "n_heads", "hidden_size", "linear_hidden_size", "dropout",
                                     "fc_dropout", "head_dropout", "attn_dropout", "patch_len", "stride", "revin",
                                     "revin_affine", "revin_subtract_last", "activation", "res_attention",
                                     "batch_normalization", "learn_pos_embed"},
}


class TrainParams(_Frozen):
    model_name: str = Field("quantum-trader-ensemble", min_length=1)
    holdout_fraction: float = Field(0.25, gt=0.05, lt=0.6)  # final slice, never seen in training
    folds: int = Field(4, ge=2, le=20)  # walk-forward folds inside the training part
    embargo_bars: int = Field(24, ge=0)
    seed: int = 42
    n_jobs: int = Field(2, ge=1, le=8)  # threads per model fit; the machines have 2 cores
    xgboost: dict[str, float | int | str] = Field(
        default_factory=lambda: {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8}
    )
    lightgbm: dict[str, float | int | str] = Field(
        default_factory=lambda: {"n_estimators": 200, "num_leaves": 15, "learning_rate": 0.05, "subsample": 0.8}
    )
    # Ensemble members, fitted in this order. nhits/patchtst (training.deep) read the window of the
    # last ``sequence_length`` 1-bar log returns (features.sequence), so they need logret_1.
    members: list[Literal["xgboost", "lightgbm", "nhits", "patchtst"]] = Field(
        default_factory=lambda: ["xgboost", "lightgbm", "nhits", "patchtst"], min_length=1)
    sequence_length: int = Field(64, ge=8, le=512)  # bars of return history the sequence members read
    # Feature columns N-HiTS also reads as historic exogenous series over the same window
    # (neuralforecast ``hist_exog_list``; PatchTST takes none): volatility and volume regime.
    sequence_exog: list[str] = Field(default_factory=lambda: ["rvol_24", "volz_24"])
    # Sized for the retrain budget (< 15 min for 4 members x 5 fits on 8 symbols x ~57k 1h bars, 2 cores):
    # one fit of each ~20-30 s. batch_size = series per step: neuralforecast rebuilds every window of
    # each series it draws at every step, so 4 of the 8 symbols per step halves the fit time.
    nhits: dict[str, int | float | str | bool | list] = Field(default_factory=lambda: {
        "max_steps": 150, "learning_rate": 0.001, "batch_size": 4, "windows_batch_size": 512,
        "mlp_units": [[64, 64], [64, 64], [64, 64]], "n_pool_kernel_size": [4, 2, 1],
        "n_freq_downsample": [4, 2, 1]})
    patchtst: dict[str, int | float | str | bool | list] = Field(default_factory=lambda: {
        "max_steps": 150, "learning_rate": 0.001, "batch_size": 4, "windows_batch_size": 512,
        "hidden_size": 32, "n_heads": 4, "linear_hidden_size": 64, "encoder_layers": 2,
        "patch_len": 16, "stride": 8})

    @model_validator(mode="after")
    def _check_members(self) -> "TrainParams":
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"train.members lists a member twice: {self.members}")
        for kind in ("nhits", "patchtst"):
            unknown = sorted(set(getattr(self, kind)) - DEEP_HPARAM_KEYS[kind])
            if unknown:
                raise ValueError(f"train.{kind} has unknown hyper-parameter(s) {unknown}; "
                                 f"allowed: {sorted(DEEP_HPARAM_KEYS[kind])}")
        return self


class SignalParams(_Frozen):
    """How an ensemble probability becomes an action; shared by backtest, service and executor."""

    buy_threshold: float = Field(0.55, gt=0.5, lt=1.0)
    sell_threshold: float = Field(0.45, gt=0.0, lt=0.5)
    max_age_bars: int = Field(1, ge=1)  # a signal older than this is stale: open nothing
    # EDGE_BELOW_COST: no entry unless the expected move over the label horizon (the model's
    # expected_return) beats the round trip's fees, slippage and expected funding by this much
    min_edge_bps: float | None = Field(None, ge=0.0, lt=10_000.0)
    # timing: each symbol on its own, by the thresholds; rank: the cross-sectional portfolio of
    # executor.rank (every rebalance_bars bars hold the top_k by expected return, and the bottom
    # top_k short where allowed; a held one stays while within top_k + rank_buffer)
    mode: Literal["timing", "rank"] = "timing"
    rebalance_bars: int = Field(24, ge=1)
    top_k: int = Field(2, ge=1)
    rank_buffer: int = Field(1, ge=0)
    rank_weighting: Literal["equal", "volatility"] = "equal"


class GateParams(_Frozen):
    """What a challenger must show on the holdout before it becomes champion."""

    min_trades: int = Field(10, ge=0)
    min_sharpe_margin: float = 0.0  # over the best baseline and the champion
    bootstrap_samples: int = Field(500, ge=50)
    bootstrap_block_bars: int = Field(24, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)  # lower CI bound of the Sharpe difference > 0
    # Deflated Sharpe ratio (Bailey & Lopez de Prado): P(true Sharpe > best of n_trials null trials).
    min_deflated_sharpe: float = Field(0.95, gt=0.0, lt=1.0)
    # Largest fall from a running equity peak the strategy may show on the holdout (fraction).
    max_drawdown: float = Field(0.25, gt=0.0, le=1.0)
    # Fewest challenger-holdout bars the champion must not have been fitted on for the two to be
    # compared (training.champion_window); fewer: comparison refused, no automatic promotion.
    min_champion_bars: int = Field(200, ge=2)
    # auto: champion moves when every gate passes; manual: it waits for `qt models approve`.
    mode: Literal["auto", "manual"] = "auto"


class ServingParams(_Frozen):
    port: int = Field(3000, ge=1024, le=65535)
    reload_interval_seconds: float = Field(10.0, gt=0.0)
    # Candles read per symbol to compute the latest features; the service reads more when the
    # champion needs more (feature warm-up + its return window, serving.inference.min_history_bars:
    # 270 + 64 for the default features and train.sequence_length).
    history_bars: int = Field(400, ge=50)
    max_staleness_bars: int = Field(2, ge=1)  # candles older than this (vs as_of) are refused
    # How often the service re-reads, in the background, the candle files of the universe last
    # asked for that the collector has rewritten (serving.refresher): the first /signals batch
    # after a new bar then finds its candles read and only computes. 0 = off (read on request).
    lake_refresh_seconds: float = Field(1.0, ge=0.0)


_RUNNER_KEYS_MOVED = ("task_runner", "dask_address")  # were collect.*, now runner.*


class RunnerParams(_Frozen):
    """Where the flows' per-symbol tasks run (collection, validation, features): the one setting for
    scale-out. ``local``: a thread pool in the flow's process; ``dask``: a Dask cluster through
    prefect-dask - an in-process ``LocalCluster`` of ``workers`` processes, or the scheduler at
    ``dask_address`` (``tcp://HOST:8786``) whose workers run the same image and see the same state
    directory. Results are byte-identical either way (``tests/flows/test_symbol_stages_flow.py``)."""

    task_runner: Literal["local", "dask"] = "local"
    dask_address: str | None = None  # None = an in-process LocalCluster for task_runner "dask"
    workers: int = Field(2, ge=1, le=64)  # threads (local) or LocalCluster worker processes (dask)

    @model_validator(mode="after")
    def _check_address(self) -> "RunnerParams":
        if self.dask_address is not None:
            if self.task_runner != "dask":
                raise ValueError("runner.dask_address is set but runner.task_runner is 'local'; "
                                 "set runner.task_runner: dask or remove the address")
            scheme, sep, rest = self.dask_address.partition("://")
            if not sep or scheme not in ("tcp", "tls", "ws", "wss", "ucx") or ":" not in rest:
                raise ValueError(f"runner.dask_address {self.dask_address!r} is not a Dask scheduler address; "
                                 f"use tcp://HOST:PORT (e.g. tcp://dask-scheduler:8786)")
        return self


class DriftParams(_Frozen):
    """Drift and decay monitoring of the champion (``training.drift``, ``qt drift``, the ``drift``
    deployment). PSI conventions: < 0.1 stable, 0.1-0.25 watch, > 0.25 shifted."""

    recent_bars: int = Field(168, ge=20)  # per symbol: the newest materialised bars compared
    bins: int = Field(10, ge=2, le=50)  # quantile bins of the training window
    feature_psi: float = Field(0.25, gt=0.0)  # a feature whose PSI exceeds this has drifted
    # How many drifted features are tolerated before the monitor trips (0 = any one trips it).
    max_drifted_features: int = Field(0, ge=0)
    # Left out of the feature PSI (shell-style patterns): price-level columns follow the price
    # itself, so they "drift" whenever the market trends, whatever the model's inputs mean.
    exclude_features: list[str] = Field(default_factory=lambda: [
        "ema_*", "sma_*", "bb_upper_*", "bb_lower_*", "atr_*", "macd*", "htf*_atr_*", "seq_ret_*"])
    prediction_psi: float = Field(0.25, gt=0.0)  # recent vs holdout predictions of the champion
    # Live (executor state) against the champion's holdout backtest; needs this many closed trades.
    min_live_trades: int = Field(20, ge=1)
    hit_rate_drop: float = Field(0.15, gt=0.0, lt=1.0)  # trips when live hit rate < backtest's - this
    # Trips when live mean PnL per trade < backtest's - this fraction of |backtest's| (1.0: a
    # profitable backtest trips once live trades lose on average).
    pnl_shortfall_fraction: float = Field(1.0, gt=0.0)
    # What a trip starts: auto = run the ``retrain`` deployment when the monitor itself runs
    # under a deployment, else call the retrain flow in-process; off = alert only.
    retrain: Literal["auto", "deployment", "direct", "off"] = "auto"
    retrain_deployment: str = Field("quantum-trader-retrain/retrain", min_length=3)


class NotifyParams(_Frozen):
    """Where alerts go (``qt.notify``). The webhook URL (it often embeds a token) and the Telegram
    bot token are read from the environment variables named here - never from this file (which
    is logged with every training run), never logged."""

    webhook_url_env: str = Field("QT_NOTIFY_WEBHOOK_URL", min_length=1)  # generic JSON POST; unset = off
    telegram_chat_id: str | None = None  # None = Telegram off
    telegram_api_base: str = "https://api.telegram.org"
    telegram_token_env: str = Field("QT_TELEGRAM_BOT_TOKEN", min_length=1)
    events: list[Literal["fill", "risk_alert", "kill_switch", "promotion", "drift"]] = Field(
        default_factory=lambda: ["fill", "risk_alert", "kill_switch", "promotion", "drift"])
    # Token bucket per event kind: ``burst`` at once, then ``per_minute``; the rest is counted and
    # reported as "N more ... suppressed" with the next message of that kind that goes out.
    burst: int = Field(3, ge=1)
    per_minute: float = Field(6.0, gt=0.0)
    timeout_s: float = Field(5.0, gt=0.0, le=60.0)

    @model_validator(mode="after")
    def _check_urls(self) -> "NotifyParams":
        if not self.telegram_api_base.startswith(("http://", "https://")):
            raise ValueError(f"notify.telegram_api_base must be an http(s) URL, got {self.telegram_api_base!r}")
        return self


class Params(_Frozen):
    data: DataParams = DataParams()
    synthetic: SyntheticParams = SyntheticParams()
    validation: ValidationParams = ValidationParams()
    features: FeatureParams = FeatureParams()
    labels: LabelParams = LabelParams()
    costs: CostParams = CostParams()
    train: TrainParams = TrainParams()
    signal: SignalParams = SignalParams()
    risk: RiskParams = RiskParams()
    gates: GateParams = GateParams()
    serving: ServingParams = ServingParams()
    collect: CollectParams = CollectParams()
    alt: AltParams = AltParams()
    runner: RunnerParams = RunnerParams()
    execute: ExecuteParams = ExecuteParams()
    drift: DriftParams = DriftParams()
    notify: NotifyParams = NotifyParams()
    tune: TuneParams = TuneParams()

    @model_validator(mode="before")
    @classmethod
    def _move_runner_keys(cls, data):
        """``collect.task_runner`` / ``collect.dask_address`` (the old names, when only collection
        was mapped) still work: they are read as ``runner.task_runner`` / ``runner.dask_address``."""
        collect = data.get("collect") if isinstance(data, dict) else None
        if not isinstance(collect, dict) or not any(k in collect for k in _RUNNER_KEYS_MOVED):
            return data
        runner = dict(data.get("runner") or {})
        for key in _RUNNER_KEYS_MOVED:
            if key in collect:
                if key in runner and runner[key] != collect[key]:
                    raise ValueError(f"collect.{key} (the old name) and runner.{key} disagree; keep runner.{key} only")
                runner[key] = collect[key]
        return {**data, "collect": {k: v for k, v in collect.items() if k not in _RUNNER_KEYS_MOVED},
                "runner": runner}

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "Params":
        r = self.risk
        pct_levels = r.stop_loss_atr is None and r.take_profit_atr is None and not r.take_profit_ladder
        if pct_levels and r.take_profit_pct <= r.stop_loss_pct * 0.25:
            raise ValueError("risk.take_profit_pct must exceed a quarter of risk.stop_loss_pct")
        if r.allow_short:
            spot = [s for s in self.data.symbols if ":" not in s]
            if spot:
                raise ValueError(f"risk.allow_short: {spot[0]} is a spot symbol and spot cannot be shorted; "
                                 f"trade its perpetual ({spot[0]}:USDT) or set risk.allow_short: false")
        if r.uses_atr and r.atr_period not in self.features.atr:
            raise ValueError(f"risk.atr_period {r.atr_period} is not a computed feature; add it to features.atr "
                             f"(the ATR levels use the feature code's atr_{r.atr_period})")
        if self.labels.horizon_bars > self.risk.max_holding_bars:
            raise ValueError("labels.horizon_bars must not exceed risk.max_holding_bars")
        sequence = [m for m in self.train.members if m in ("nhits", "patchtst")]
        if self.labels.target == "triple_barrier" and sequence:
            raise ValueError(f"labels.target triple_barrier: train.members {sequence} forecast the forward "
                             f"return, not a trade's outcome; drop them from train.members or set labels.target: "
                             f"forward_return")
        return self

    def digest(self) -> str:
        """Stable hash of the whole config, logged with every run."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _one_line(err: ValidationError, path: Path | str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against params.yaml's documented keys)"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {key}: {msg}{more}"


def load_params(path: Path | str | None = None, overrides: dict | None = None) -> Params:
    """Load and validate ``params.yaml``; ``overrides`` are nested dicts merged on top.

    Raises ``ConfigError`` with one line naming the offending key.
    """
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found; pass --params PATH or create params.yaml")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}; fix the syntax") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections (data, features, ...)")
        raw = loaded
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err, path or "config")) from None


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
