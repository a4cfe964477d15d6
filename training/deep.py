"""The sequence members: N-HiTS and PatchTST (neuralforecast) as P(up) classifiers.

Each member is a neural forecaster of the next ``horizon`` one-bar log returns, trained with
neuralforecast's public ``NeuralForecast.fit`` on every symbol's ``logret_1`` series, and
turned into a probability by a two-number logistic calibration of the label ``up`` on the
forecast sum ``z`` (the forecast of the label's own forward log return):
``P(up) = sigmoid(a + b * z)``.

Why prediction bypasses ``NeuralForecast.predict``: the ensemble is one pickled MLflow model
that must score any row - in a backtest, in serving - from that row alone. Every row carries
its own input window (``features.sequence``: ``seq_ret_0`` = this bar, newest first), so the
member calls the trained torch module on a batch of windows. That equals what
``NeuralForecast.predict`` computes because the network sees exactly what neuralforecast fed
it: ``scaler_type="identity"`` and a series standardised here by one scale fitted at training
time (the pooled std of the training returns), mask all ones, same float32 arithmetic
(proved per symbol in tests/training/test_deep.py).

Exogenous inputs: N-HiTS takes historic exogenous series (neuralforecast's ``hist_exog_list``;
PatchTST takes none). With ``exog`` (``train.sequence_exog``) the network also reads the same
window of those feature columns (``seq_<column>_k``), each standardised by its training mean and
std, fed as ``hist_exog`` exactly as neuralforecast's windows carry it.

Determinism: ``random_seed`` (window sampling, initialisation) and ``torch.set_num_threads(n_jobs)``
- same rows + same params => bit-identical forecasts. Pickling keeps only the trained module
(``eval()`` mode, no trainer), the scale and the calibration.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import pandas as pd

from features.sequence import SOURCE_COLUMN, all_window_columns
from qt.config import DEEP_HPARAM_KEYS
from qt.errors import ConfigError, DataError

KINDS = ("nhits", "patchtst")
EXOG_KINDS = ("nhits",)  # neuralforecast models with EXOGENOUS_HIST
CALIBRATION_MAX_ROWS = 50_000  # in-sample rows the logistic calibration is fitted on (strided subsample)
PREDICT_BATCH_ROWS = 16_384  # windows per forward pass: bounds memory, not results
_INT_KEYS = {"max_steps", "batch_size", "windows_batch_size", "step_size", "num_lr_decays", "encoder_layers",
             "n_heads", "hidden_size", "linear_hidden_size", "patch_len", "stride"}
_TRAINER = dict(enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
                accelerator="cpu", devices=1)
_NOISY_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric",
                  "lightning.fabric", "neuralforecast")


class SequenceForecaster:
    """neuralforecast N-HiTS / PatchTST trained on per-symbol 1-bar log-return series; predicts the
    sum of the next ``horizon`` returns from a row's window; a logistic calibration maps that to P(up).

    ``predict_proba`` takes the ``seq_ret_*`` window columns (``features.sequence.window_columns``,
    newest first) like an sklearn classifier takes its features.
    """

    feature_importances_ = None  # no per-tabular-feature importance: the ensemble table shows NaN

    def __init__(self, kind: str, horizon: int, input_size: int, hparams: dict, seed: int, n_jobs: int,
                 exog: tuple[str, ...] | list[str] = ()):
        if kind not in KINDS:
            raise ConfigError(f"sequence member {kind!r} unknown; use one of {list(KINDS)}")
        if exog and kind not in EXOG_KINDS:
            raise ConfigError(f"{kind} takes no exogenous inputs in neuralforecast; only {list(EXOG_KINDS)} read "
                              f"train.sequence_exog")
        unknown = sorted(set(hparams) - DEEP_HPARAM_KEYS[kind])
        if unknown:
            raise ConfigError(f"train.{kind}: unknown hyper-parameter(s) {unknown}; "
                              f"allowed: {sorted(DEEP_HPARAM_KEYS[kind])}")
        if horizon < 1 or input_size < 1:
            raise ConfigError(f"sequence member needs horizon >= 1 and input_size >= 1, got {horizon}, {input_size}")
        self.kind = kind
        self.horizon = int(horizon)
        self.input_size = int(input_size)
        self.hparams = {k: int(v) if k in _INT_KEYS else v for k, v in dict(hparams).items()}
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)
        self.exog = tuple(exog)
        self.exog_mean_ = np.zeros(0)
        self.exog_scale_ = np.ones(0)
        self.scale_: float | None = None
        self.calibration_: tuple[float, float] | None = None
        self.module_ = None

    def __setstate__(self, state: dict) -> None:
        """Members pickled before exogenous inputs existed read none."""
        state.setdefault("exog", ())
        state.setdefault("exog_mean_", np.zeros(0))
        state.setdefault("exog_scale_", np.ones(0))
        self.__dict__.update(state)

    @property
    def input_columns(self) -> list[str]:
        """The window columns ``predict_proba`` reads, in order."""
        return all_window_columns(self.input_size, self.exog)

    # ------------------------------------------------------------------ training
    def fit(self, frame: pd.DataFrame, up: np.ndarray, windows=None) -> "SequenceForecaster":
        """Train the network on each symbol's ``SOURCE_COLUMN`` series, then calibrate P(up).

        ``frame``: the training slice's rows (several symbols, any order) with ``symbol``,
        ``timestamp``, ``SOURCE_COLUMN`` and the ``window_columns(input_size)``; ``up`` the labels
        aligned with ``frame``'s rows. Each symbol's rows, in time order, are one series (rows,
        not hours: gaps are not filled, as in ``features.compute``). The calibration is fitted on
        the in-sample forecasts of at most ``CALIBRATION_MAX_ROWS`` rows (a fixed stride).
        ``windows``: a function of row positions in ``frame`` giving those rows' ``input_columns``
        (``features.sequence.ReturnWindows``, training's batches) when ``frame`` does not carry them.
        """
        up = np.asarray(up, dtype=np.float64)
        if len(up) != len(frame):
            raise DataError(f"{self.kind}: {len(frame)} rows but {len(up)} labels; pass labels aligned with the rows")
        missing = [c for c in ("symbol", "timestamp", SOURCE_COLUMN, *self.exog) if c not in frame.columns]
        if missing:
            raise DataError(f"{self.kind}: training rows lack columns {missing}; pass the joined feature rows")
        # one canonical row order: the fit (incl. the calibration's subsample) ignores the input order
        order = np.lexsort((frame["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64"),
                            frame["symbol"].astype(str).to_numpy()))
        frame, up = frame.iloc[order], up[order]
        series = self._training_series(frame)
        pick = _strided(len(frame), CALIBRATION_MAX_ROWS)
        self.scale_ = float(np.std(series["y"].to_numpy(), ddof=1))
        if not np.isfinite(self.scale_) or self.scale_ <= 0:
            raise DataError(f"{self.kind}: the training returns are constant; nothing to learn")
        series["y"] = series["y"] / self.scale_
        if self.exog:
            raw = series[list(self.exog)].to_numpy(dtype=np.float64)
            self.exog_mean_ = raw.mean(axis=0)
            self.exog_scale_ = raw.std(axis=0, ddof=1)
            flat = [c for c, sd in zip(self.exog, self.exog_scale_) if not (np.isfinite(sd) and sd > 0)]
            if flat:
                raise DataError(f"{self.kind}: exogenous column(s) {flat} are constant on the training rows; "
                                f"remove them from train.sequence_exog")
            series[list(self.exog)] = (raw - self.exog_mean_) / self.exog_scale_
        self.module_ = self._train_network(series)

        calibration_windows = (_window_matrix(frame, self.input_columns, self.kind, self.input_size)[pick]
                               if windows is None else windows(order[pick]))
        self.calibration_ = fit_logistic(self.forecast_sum(calibration_windows), up[pick])
        return self

    def _training_series(self, frame: pd.DataFrame) -> pd.DataFrame:
        """neuralforecast's long frame: unique_id = symbol, ds = row position in time, y = return."""
        rows = frame[["symbol", "timestamp", SOURCE_COLUMN, *self.exog]]  # sorted by symbol, then time (``fit``)
        y = rows[SOURCE_COLUMN].to_numpy(dtype=np.float64)
        for column in (SOURCE_COLUMN, *self.exog):
            bad = int((~np.isfinite(rows[column].to_numpy(dtype=np.float64))).sum())
            if bad:
                raise DataError(f"{self.kind}: {bad} training rows have NaN/inf {column}; drop warm-up rows "
                                f"before fitting")
        series = pd.DataFrame({"unique_id": rows["symbol"].astype(str).to_numpy(), "y": y})
        for column in self.exog:
            series[column] = rows[column].to_numpy(dtype=np.float64)
        series["ds"] = series.groupby("unique_id", sort=False).cumcount().astype(np.int64)
        sizes = series.groupby("unique_id", sort=False)["y"].transform("size")
        need = self.input_size + self.horizon
        series = series[sizes >= need]
        if series.empty:
            raise DataError(f"{self.kind}: no symbol has {need} training rows (input_size + horizon); "
                            f"lower train.sequence_length or train on a longer period")
        return series.reset_index(drop=True)

    def _train_network(self, series: pd.DataFrame):
        """The fitted torch module, in eval mode, detached from its trainer."""
        import torch
        from neuralforecast import NeuralForecast
        from neuralforecast.models import NHITS, PatchTST

        torch.set_num_threads(self.n_jobs)
        model_class = {"nhits": NHITS, "patchtst": PatchTST}[self.kind]
        max_steps = int(self.hparams.get("max_steps", 100))
        with _quiet():
            exog = {"hist_exog_list": list(self.exog)} if self.exog else {}
            model = model_class(h=self.horizon, input_size=self.input_size, scaler_type="identity",
                                random_seed=self.seed, val_check_steps=max_steps, **exog, **self.hparams, **_TRAINER)
            nf = NeuralForecast(models=[model], freq=1)
            nf.fit(series[["unique_id", "ds", "y", *self.exog]], val_size=0)
        module = nf.models[0]
        module.eval()
        module.trainer = None  # no trainer, callbacks or data module in the pickle
        return module

    # ------------------------------------------------------------------ prediction
    def forecast_sum(self, windows: np.ndarray) -> np.ndarray:
        """Sum of the ``horizon`` forecast returns for each row of windows: ``[n, input_size]``
        returns, newest first, then ``input_size`` columns per exogenous column (``input_columns``)."""
        import torch

        if self.module_ is None:
            raise DataError(f"{self.kind}: forecast before fit; fit the member first")
        x = np.asarray(windows, dtype=np.float64)
        width = self.input_size * (1 + len(self.exog))
        if x.ndim != 2 or x.shape[1] != width:
            raise DataError(f"{self.kind}: windows must be [rows, {width}] ({', '.join(self.input_columns[:2])}..), "
                            f"got {x.shape}")
        if not np.isfinite(x).all():
            raise DataError(f"{self.kind}: {int((~np.isfinite(x).all(axis=1)).sum())} window(s) hold NaN/inf; "
                            f"drop rows with fewer than {self.input_size} bars of history")
        torch.set_num_threads(self.n_jobs)
        # oldest first, standardised exactly as the training series (float64 arithmetic, then float32)
        blocks = x.reshape(len(x), 1 + len(self.exog), self.input_size)[:, :, ::-1]  # [n, 1+X, L] oldest first
        scaled = np.ascontiguousarray(blocks[:, 0, :] / self.scale_).astype(np.float32)
        exog = None
        if self.exog:
            standard = (blocks[:, 1:, :] - self.exog_mean_[None, :, None]) / self.exog_scale_[None, :, None]
            exog = np.ascontiguousarray(standard.transpose(0, 2, 1)).astype(np.float32)  # [n, L, X]
        out = np.empty(len(x), dtype=np.float64)
        with torch.inference_mode():  # no autograd bookkeeping at all (same arithmetic as no_grad)
            for start in range(0, len(x), PREDICT_BATCH_ROWS):
                batch = torch.from_numpy(scaled[start:start + PREDICT_BATCH_ROWS]).unsqueeze(-1)  # [B, L, 1]
                hist = torch.from_numpy(exog[start:start + PREDICT_BATCH_ROWS]) if exog is not None else None
                windows_batch = dict(insample_y=batch, insample_mask=torch.ones_like(batch),
                                     futr_exog=None, hist_exog=hist, stat_exog=None)
                y_hat = self.module_.loss.domain_map(self.module_(windows_batch))  # [B, h, 1]
                out[start:start + len(batch)] = y_hat.reshape(len(batch), -1).double().sum(dim=1).numpy()
        return out * self.scale_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """sklearn-style ``[n, 2]``: columns (1 - P(up), P(up)); ``x`` = the rows' windows."""
        if self.calibration_ is None:
            raise DataError(f"{self.kind}: predict before fit; fit the member first")
        a, b = self.calibration_
        p = _sigmoid(a + b * self.forecast_sum(x))
        return np.column_stack([1.0 - p, p])


def fit_logistic(z: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) maximising the Bernoulli likelihood of ``y`` under ``sigmoid(a + b * z)`` (Newton).

    Two numbers, no penalty: enough rows make it well posed. ``z`` is standardised inside for
    conditioning. A constant ``z`` cannot rank rows: slope 0, intercept = logit of the base rate.
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    base = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if len(y) else 0.5
    sd = float(np.std(z)) if len(z) > 1 else 0.0
    if sd == 0.0 or not np.isfinite(sd):
        return float(np.log(base / (1 - base))), 0.0
    mu = float(np.mean(z))
    design = np.column_stack([np.ones_like(z), (z - mu) / sd])
    w = np.array([np.log(base / (1 - base)), 0.0])
    for _ in range(iterations):
        p = _sigmoid(design @ w)
        grad = design.T @ (y - p)
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    slope = w[1] / sd
    return float(w[0] - slope * mu), float(slope)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, dtype=np.float64)))  # overflow-free logistic


def _strided(n: int, at_most: int) -> np.ndarray:
    """Deterministic subsample: every k-th row, at most ``at_most`` rows."""
    step = max(1, -(-n // at_most))
    return np.arange(0, n, step)


def _window_matrix(frame: pd.DataFrame, columns: list[str], kind: str, input_size: int) -> np.ndarray:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{kind}: rows lack the window columns {missing[:2]}...; build them with "
                        f"features.sequence.add_return_windows(features, {input_size}, exog=...)")
    return frame[columns].to_numpy(dtype=np.float64)


@contextlib.contextmanager
def _quiet():
    """Lightning's banner lines ("GPU available", "Seed set") and its deprecation warnings are noise
    in a pipeline log: raise those loggers to WARNING and drop library warnings while fitting."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
