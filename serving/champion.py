"""The champion model: resolve the registry alias, load a version, hot-swap it.

Invariants:

* Nothing is served without the model the ``champion`` alias points at. No
  champion in the registry, or a champion that fails to load, leaves
  ``ChampionWatcher.current`` at ``None`` and the service not ready (503).
* A new champion is loaded completely before it is published; publishing is a
  single reference assignment, so a request that already took the old model
  finishes with it and no request ever sees a half-loaded model.
* A registry that cannot be reached keeps the model already loaded (the alias
  did not move as far as anyone knows) and is logged as an error on every poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from qt.config import FeatureParams
from serving.refresher import Refresher

log = logging.getLogger("qt.serving")

CHAMPION_ALIAS = "champion"
_REQUIRED_METADATA = ("feature_params", "feature_columns", "feature_set_hash", "timeframe")
OUTPUT_COLUMNS = ("prob_up", "expected_return")


class ModelContractError(Exception):
    """The registered model or its output breaks the Model contract (see common docs)."""


@dataclass(frozen=True)
class LoadedModel:
    """One registered model version, loaded and checked against the Model contract."""

    name: str
    version: str
    alias: str
    pyfunc: Any = field(repr=False)
    metadata: dict = field(repr=False)
    feature_params: FeatureParams = field(repr=False)
    feature_columns: tuple[str, ...] = field(repr=False)
    timeframe: str = ""
    run_id: str | None = None
    loaded_at: str = ""
    # Bars of 1-bar log returns each input row carries (``features.sequence``): the model's
    # sequence members read them; 0 for a model without such members.
    sequence_length: int = 0
    # Feature columns whose windows of the same length ride along (``seq_<column>_k``, N-HiTS's
    # exogenous inputs); empty for models without them.
    sequence_exog: tuple[str, ...] = ()
    # The pyfunc's own implementation without MLflow's per-call schema check (``direct_predictor``),
    # or None: then ``predict_rows`` goes through ``pyfunc.predict`` like ``predict``.
    direct: Callable[[pd.DataFrame], Any] | None = field(default=None, repr=False, compare=False)
    # The model's own matrix entry (``values [n, feature_columns] -> [n, (prob_up, expected_return)]``,
    # ``training.ensemble.EnsembleModel.predict_matrix``) when proved to answer as the pyfunc
    # (``matrix_predictor``), or None: then ``predict_values`` builds a frame for ``predict_rows``.
    matrix: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    # One call into the model at a time: a forward pass may keep state on the model between its
    # steps (neuralforecast's RevIN in PatchTST stores the batch's mean and std on the module and
    # reads them back to de-normalise), so two overlapping calls could mix their batches. The
    # service answers cached requests on its event loop while a worker thread computes features.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """``prob_up`` and ``expected_return`` per row of ``features`` (exactly the model's columns).

        Raises ModelContractError when the model returns something else: a wrong
        probability must never become a trade.
        """
        frame = features.loc[:, list(self.feature_columns)]
        with self.lock:
            out = self.pyfunc.predict(frame)
        return self._checked(out, len(features))

    def predict_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``predict`` for a frame the service built itself: exactly ``feature_columns``, float64, finite.

        Such a frame already satisfies the logged signature, so MLflow's schema enforcement
        (~4 ms a call, more than the four members take for one row) is skipped when the model
        was proved to answer identically without it (``direct_predictor``).
        """
        if self.direct is None:
            return self.predict(rows)
        with self.lock:
            out = self.direct(rows)
        return self._checked(out, len(rows))

    def predict_values(self, values: np.ndarray) -> np.ndarray:
        """``predict_rows`` for a float64 matrix in ``feature_columns`` order, without frames:
        ``[n, 2]`` (prob_up, expected_return), checked against the Model contract.

        The service's rows are such a matrix already; a model with a proved matrix entry
        (``matrix_predictor``) takes it as it is (~1 ms a call less than frames in and out),
        any other model gets the frame ``predict_rows`` takes.
        """
        if self.matrix is None:
            frame = pd.DataFrame(values, columns=list(self.feature_columns), copy=False)
            return self.predict_rows(frame).to_numpy()  # checked there
        with self.lock:
            out = np.asarray(self.matrix(values), dtype=np.float64)
        if out.ndim != 2 or out.shape[1] != len(OUTPUT_COLUMNS):
            raise ModelContractError(f"model {self.name} v{self.version} returned shape {out.shape}, not "
                                     f"[rows, {len(OUTPUT_COLUMNS)}] {list(OUTPUT_COLUMNS)}")
        return self._checked_values(out, len(values))

    def _checked(self, out: Any, n_rows: int) -> pd.DataFrame:
        if not isinstance(out, pd.DataFrame):
            out = pd.DataFrame(out)
        missing = [c for c in OUTPUT_COLUMNS if c not in out.columns]
        if missing:
            raise ModelContractError(f"model {self.name} v{self.version} output lacks {missing}")
        values = np.column_stack([out[c].to_numpy(dtype=np.float64) for c in OUTPUT_COLUMNS])
        return pd.DataFrame(self._checked_values(values, n_rows), columns=list(OUTPUT_COLUMNS), copy=False)

    def _checked_values(self, values: np.ndarray, n_rows: int) -> np.ndarray:
        if len(values) != n_rows:
            raise ModelContractError(f"model {self.name} v{self.version} returned {len(values)} rows "
                                     f"for {n_rows} inputs")
        prob = values[:, 0]
        if not np.all(np.isfinite(values)) or np.any((prob < 0) | (prob > 1)):
            raise ModelContractError(f"model {self.name} v{self.version} returned a non-finite value "
                                     f"or a prob_up outside [0, 1]")
        return values

    def describe(self) -> dict:
        """What ``/metadata`` shows: which model decides, and on what data it was trained."""
        md = self.metadata
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "timeframe": self.timeframe,
            "feature_set_hash": md.get("feature_set_hash"),
            "feature_columns": list(self.feature_columns),
            "sequence_length": self.sequence_length,
            "sequence_exog": list(self.sequence_exog),
            "train_start": md.get("train_start"),
            "train_end": md.get("train_end"),
            "trained_at": md.get("trained_at"),
            "data_sha256": md.get("data_sha256"),
        }


def sequence_length_of(name: str, version: str, metadata: dict | None) -> int:
    """``sequence_length`` from the logged metadata: absent or 0 = no return window; else an int >= 1."""
    raw = (metadata or {}).get("sequence_length") or 0
    try:
        length = int(raw)
    except (TypeError, ValueError):
        length = -1
    if length < 0 or str(length) != str(raw).strip():
        raise ModelContractError(f"model {name} v{version}: metadata sequence_length {raw!r} is not a "
                                 f"non-negative integer; log the model with the bars of its return window")
    return length


def sequence_exog_of(name: str, version: str, metadata: dict | None) -> tuple[str, ...]:
    """``sequence_exog`` from the logged metadata: the feature columns windowed beside the returns
    (absent = none); ModelContractError when it is not a list of column names."""
    raw = (metadata or {}).get("sequence_exog") or []
    if not isinstance(raw, (list, tuple)) or not all(isinstance(c, str) and c for c in raw):
        raise ModelContractError(f"model {name} v{version}: metadata sequence_exog {raw!r} is not a list of "
                                 f"feature columns; log the model with the columns its windows carry")
    return tuple(raw)


def check_model_metadata(name: str, version: str, metadata: dict | None) -> tuple[FeatureParams, tuple[str, ...], str]:
    """Feature params, feature columns and timeframe from the logged metadata.

    The service recomputes features with exactly these params (and the return window of
    ``sequence_length`` bars, ``features.sequence``), so a model without them cannot be served
    (ModelContractError).
    """
    from features.compute import feature_columns as declared_columns
    from features.compute import feature_set_hash
    from features.sequence import SOURCE_COLUMN, window_columns

    md = metadata or {}
    missing = [k for k in _REQUIRED_METADATA if k not in md]
    if missing:
        raise ModelContractError(f"model {name} v{version}: metadata lacks {missing}; "
                                 f"log the model with the contract metadata")
    try:
        fp = FeatureParams(**md["feature_params"])
    except Exception as exc:  # noqa: BLE001 - any invalid params block makes the model unservable
        raise ModelContractError(f"model {name} v{version}: metadata feature_params invalid: {exc}") from None
    cols = tuple(str(c) for c in md["feature_columns"])
    length = sequence_length_of(name, version, md)
    exog = sequence_exog_of(name, version, md)
    produced = declared_columns(fp)
    not_produced = [c for c in exog if c not in produced]
    if not_produced:
        raise ModelContractError(f"model {name} v{version}: sequence_exog {not_produced} are not produced by "
                                 f"features.compute for its feature_params")
    windows = set(window_columns(length)).union(*(window_columns(length, c) for c in exog))
    unknown = sorted(set(cols) - set(produced) - windows)
    if not cols or unknown:
        raise ModelContractError(f"model {name} v{version}: feature_columns {unknown or '[]'} are not "
                                 f"produced by features.compute for its feature_params"
                                 + (f" nor by a return window of sequence_length {length}" if length else ""))
    if length and SOURCE_COLUMN not in produced:
        raise ModelContractError(f"model {name} v{version}: sequence_length {length} needs the {SOURCE_COLUMN} "
                                 f"feature, which its feature_params do not produce (features.log_return lacks 1)")
    if md["feature_set_hash"] != feature_set_hash(fp):
        raise ModelContractError(f"model {name} v{version}: trained on feature set {str(md['feature_set_hash'])[:12]} "
                                 f"but this code computes {feature_set_hash(fp)[:12]} for the same params; "
                                 f"retrain the model with the current features code")
    return fp, cols, str(md["timeframe"])


def resolve_champion_version(client, model_name: str) -> str | None:
    """Version the ``champion`` alias points at; None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return str(mv.version)


def load_model_version(client, model_name: str, version: str) -> LoadedModel:
    """Load ``models:/<name>/<version>`` (by version, never by alias: the alias may move meanwhile)."""
    import mlflow.pyfunc

    mv = client.get_model_version(model_name, version)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    metadata = dict(pyfunc.metadata.metadata or {})
    fp, cols, timeframe = check_model_metadata(model_name, version, metadata)
    use_one_thread(pyfunc)
    return LoadedModel(name=model_name, version=str(version), alias=CHAMPION_ALIAS, pyfunc=pyfunc,
                       metadata=metadata, feature_params=fp, feature_columns=cols, timeframe=timeframe,
                       sequence_length=sequence_length_of(model_name, version, metadata),
                       sequence_exog=sequence_exog_of(model_name, version, metadata),
                       direct=direct_predictor(pyfunc, cols), matrix=matrix_predictor(pyfunc, cols),
                       run_id=getattr(mv, "run_id", None),
                       loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def use_one_thread(pyfunc) -> None:
    """Predict on one thread: members trained with ``train.n_jobs`` threads keep that count in the
    pickle, and on a 2-core machine shared with other work a request's small batch (1 to a few
    hundred rows) is far slower on two threads than on one (measured on the default ensemble:
    one symbol 300 ms -> 17 ms, as OpenMP/torch threads wait for each other). Thread count changes
    no prediction of the trees, and on the networks the 566-row batch was bit-identical.
    Members are reached through the ensemble's ``members`` (``training.ensemble``); any other
    model is left as it is."""
    try:
        members = getattr(pyfunc.unwrap_python_model(), "members", None)
    except Exception:  # noqa: BLE001 - not a PythonModel flavour: nothing of ours to tune
        return
    for member in (members or {}).values():
        if hasattr(member, "get_params") and "n_jobs" in member.get_params():
            member.set_params(n_jobs=1)  # XGBoost / LightGBM (sklearn API)
        elif isinstance(getattr(member, "n_jobs", None), int):
            member.n_jobs = 1  # training.deep.SequenceForecaster: torch.set_num_threads(n_jobs)


def direct_predictor(pyfunc, feature_columns: tuple[str, ...]) -> Callable[[pd.DataFrame], Any] | None:
    """The pyfunc's implementation called without MLflow's per-call input-schema enforcement, if
    the model answers its own logged input example identically both ways; else None.

    Enforcement converts a frame to the signature's columns and types; the service's frames already
    have exactly those (float64 ``feature_columns``), so the check only costs time. The comparison
    on the example is the proof for this model; a model without an example keeps the checked path.
    """
    impl = getattr(pyfunc, "_model_impl", None)
    direct = getattr(impl, "predict", None)
    try:
        example = pyfunc.input_example
    except Exception:  # noqa: BLE001 - no readable example: no proof
        return None
    if direct is None or not isinstance(example, pd.DataFrame) or example.empty:
        return None
    try:
        frame = pd.DataFrame(example.loc[:, list(feature_columns)].to_numpy(dtype=np.float64),
                             columns=list(feature_columns))
        checked, unchecked = pyfunc.predict(frame), direct(frame)
    except Exception:  # noqa: BLE001 - any failure: keep the checked path
        return None
    same = (isinstance(checked, pd.DataFrame) and isinstance(unchecked, pd.DataFrame)
            and checked.columns.equals(unchecked.columns)
            and np.array_equal(checked.to_numpy(), unchecked.to_numpy(), equal_nan=True))
    if not same:
        log.warning("model answers differently without MLflow's schema enforcement; serving it with it")
        return None
    return direct


def matrix_predictor(pyfunc, feature_columns: tuple[str, ...]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The model's ``predict_matrix`` (values in ``feature_columns`` order -> ``[n, 2]`` prob_up,
    expected_return) if it has one for exactly these columns and answers its own logged input
    example bit for bit as ``pyfunc.predict`` (MLflow's checked path) does; else None.

    It is the arithmetic ``predict`` runs (``training.ensemble``), minus building the input and
    output frames; the comparison on the example is the proof for this model, as for ``direct_predictor``.
    """
    try:
        model = pyfunc.unwrap_python_model()
        example = pyfunc.input_example
    except Exception:  # noqa: BLE001 - not a PythonModel, or no readable example: no proof
        return None
    entry = getattr(model, "predict_matrix", None)
    if (not callable(entry) or list(getattr(model, "feature_columns", [])) != list(feature_columns)
            or not isinstance(example, pd.DataFrame) or example.empty):
        return None
    try:
        values = example.loc[:, list(feature_columns)].to_numpy(dtype=np.float64)
        checked = pyfunc.predict(pd.DataFrame(values, columns=list(feature_columns)))
        unchecked = np.asarray(entry(values))
    except Exception:  # noqa: BLE001 - any failure: keep the frame path
        return None
    same = (isinstance(checked, pd.DataFrame) and list(checked.columns) == list(OUTPUT_COLUMNS)
            and unchecked.shape == checked.shape and np.array_equal(checked.to_numpy(), unchecked))
    if not same:
        log.warning("model's predict_matrix answers differently from its pyfunc; serving it through frames")
        return None
    return entry


class ChampionWatcher:
    """Polls the registry and publishes the champion; ``current`` is what requests use.

    ``resolve`` returns the champion's version (None = no champion); ``load``
    loads one version. ``on_switch(old, new)`` runs after each publication
    (logging and the reload counter live there).
    """

    def __init__(self, resolve: Callable[[], str | None], load: Callable[[str], LoadedModel],
                 interval_s: float, model_name: str,
                 on_switch: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
                 on_poll_error: Callable[[], None] | None = None):
        self._resolve = resolve
        self._load = load
        self._model_name = model_name
        self._on_switch = on_switch or (lambda old, new: None)
        self._on_poll_error = on_poll_error or (lambda: None)
        self._current: LoadedModel | None = None
        self._why_not_ready = f"no '{CHAMPION_ALIAS}' alias checked yet for model {model_name}"
        self._poller = Refresher(self._poll_timed, interval_s, name="champion-watcher")

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def why_not_ready(self) -> str:
        """One line for the 503 body: what is missing and what to do."""
        return self._why_not_ready

    def poll_once(self) -> None:
        """One registry check; loads and publishes a moved champion. Never raises."""
        try:
            version = self._resolve()
        except Exception as exc:  # noqa: BLE001 - registry down: keep the loaded champion, say so
            self._on_poll_error()
            log.error("registry poll failed (%s: %s); keeping champion %s", type(exc).__name__, exc,
                      self._current.version if self._current else "none")
            if self._current is None:
                self._why_not_ready = f"model registry unreachable ({type(exc).__name__}); retrying"
            return
        old = self._current
        if version is None:
            if old is not None:
                log.error("alias '%s' of %s was removed; unloading v%s and refusing signals",
                          CHAMPION_ALIAS, self._model_name, old.version)
            self._current = None
            self._why_not_ready = (f"no model registered as {self._model_name}@{CHAMPION_ALIAS}; "
                                   f"train and promote one (qt train / qt promote)")
            return
        if old is not None and old.version == version:
            return
        try:
            new = self._load(version)
        except Exception as exc:  # noqa: BLE001 - an unloadable champion must not be replaced by the old one
            self._on_poll_error()
            self._current = None
            self._why_not_ready = (f"champion {self._model_name} v{version} failed to load "
                                   f"({type(exc).__name__}: {exc}); retrying")
            log.error("%s", self._why_not_ready)
            return
        self._current = new  # the single atomic swap; in-flight requests keep `old`
        self._why_not_ready = ""
        log.warning("champion switched: %s %s -> v%s (trained %s..%s, feature set %s)", self._model_name,
                    f"v{old.version}" if old else "nothing", new.version, new.metadata.get("train_start"),
                    new.metadata.get("train_end"), str(new.metadata.get("feature_set_hash"))[:12])
        self._on_switch(old, new)

    def start(self) -> None:
        self._poller.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._poller.stop(timeout_s)

    def _poll_timed(self) -> None:
        started = time.monotonic()
        self.poll_once()
        log.debug("registry poll took %.3fs", time.monotonic() - started)
