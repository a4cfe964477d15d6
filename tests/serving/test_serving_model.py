"""``LoadedModel.predict_rows`` and ``predict_values`` (the ``/signals`` model call) answer exactly as
the MLflow pyfunc does with its schema enforcement, and fall back to it when that cannot be proved;
the model is called by one request at a time."""

from __future__ import annotations

import threading
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature

from features.compute import feature_columns, feature_set_hash
from qt.config import FeatureParams
from qt.paths import StatePaths
from serving.champion import ModelContractError, load_model_version

import qt_serving_support as support

NAME = "direct-path-model"


def _log(paths: StatePaths, with_example: bool, k: float = 40.0, matrix_offset: float | None = None) -> str:
    """Log the toy model; ``matrix_offset`` given: the variant with a ``predict_matrix`` entry."""
    from qt_serving_toy_model import MatrixMomentumModel, SigmoidMomentumModel

    fp = FeatureParams()
    cols = feature_columns(fp)
    example = pd.DataFrame(np.random.default_rng(3).normal(0, 0.01, (5, len(cols))), columns=cols)
    model = SigmoidMomentumModel(k) if matrix_offset is None else MatrixMomentumModel(k, cols, matrix_offset)
    metadata = {"feature_params": fp.model_dump(mode="json"), "feature_columns": cols,
                "feature_set_hash": feature_set_hash(fp), "timeframe": "1h"}
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)
    extra = {"input_example": example,
             "signature": infer_signature(example, model.predict(None, example))} if with_example else {}
    client = MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    exp = client.get_experiment_by_name("direct-path")  # artifacts under the tmp state dir, not ./mlruns
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "direct-path", artifact_location=paths.mlflow_artifacts.as_uri())
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=model, code_paths=[str(support.TOY_MODEL_FILE)],
                                       pip_requirements=["mlflow"], metadata=metadata,
                                       registered_model_name=NAME, **extra)
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    paths = StatePaths(tmp_path_factory.mktemp("qt_home_direct")).ensure()
    support.init_registry(paths.tracking_uri)
    return paths, MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)


def _rows(columns, n: int = 7) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(8).normal(0, 0.02, (n, len(columns))), columns=list(columns))


def test_a_model_with_an_input_example_is_called_directly_and_answers_as_the_pyfunc(registry):
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=True))
    assert model.direct is not None
    rows = _rows(model.feature_columns)
    direct = model.predict_rows(rows)
    checked = model.predict(rows)  # through mlflow's schema enforcement
    pd.testing.assert_frame_equal(direct, checked, check_exact=True)
    x = rows["logret_4"].to_numpy()
    np.testing.assert_array_equal(direct["prob_up"].to_numpy(), 1.0 / (1.0 + np.exp(-40.0 * x)))


def test_a_model_without_an_input_example_keeps_the_checked_path(registry):
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=False))
    assert model.direct is None
    rows = _rows(model.feature_columns)
    pd.testing.assert_frame_equal(model.predict_rows(rows), model.predict(rows), check_exact=True)


def test_the_direct_path_still_refuses_an_output_outside_the_contract(registry):
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=True))
    broken = type(model)(**{**model.__dict__, "direct": lambda rows: pd.DataFrame({"prob_up": [1.5] * len(rows),
                                                                                   "expected_return": 0.0})})
    with pytest.raises(ModelContractError, match="outside"):
        broken.predict_rows(_rows(model.feature_columns, 2))


def test_a_model_with_a_matrix_entry_is_called_with_the_values_and_answers_as_the_pyfunc(registry):
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=True, matrix_offset=0.0))
    assert model.matrix is not None
    rows = _rows(model.feature_columns)
    values = model.predict_values(rows.to_numpy())
    np.testing.assert_array_equal(values, model.predict(rows).to_numpy())  # the checked pyfunc path
    np.testing.assert_array_equal(values[:, 0], 1.0 / (1.0 + np.exp(-40.0 * rows["logret_4"].to_numpy())))


@pytest.mark.parametrize("matrix_offset", [None, 1e-12])
def test_without_a_proved_matrix_entry_the_values_go_through_the_pyfunc(registry, matrix_offset):
    """No entry, or one that answers the input example differently: frames, as MLflow calls it."""
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=True, matrix_offset=matrix_offset))
    assert model.matrix is None
    rows = _rows(model.feature_columns)
    np.testing.assert_array_equal(model.predict_values(rows.to_numpy()), model.predict(rows).to_numpy())


def test_the_matrix_path_still_refuses_an_output_outside_the_contract(registry):
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=True, matrix_offset=0.0))
    broken = type(model)(**{**model.__dict__, "matrix": lambda values: np.full((len(values), 2), np.nan)})
    with pytest.raises(ModelContractError, match="non-finite"):
        broken.predict_values(_rows(model.feature_columns, 2).to_numpy())


def test_concurrent_requests_never_call_the_model_at_the_same_time(registry):
    """A forward pass may keep state on the model between its steps (PatchTST's RevIN does), and
    the service answers cached requests on its event loop while a thread computes features."""
    paths, client = registry
    model = load_model_version(client, NAME, _log(paths, with_example=True, matrix_offset=0.0))
    inside, overlaps = [0], []

    def slow(values):
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.01)
        inside[0] -= 1
        return np.column_stack([np.full(len(values), 0.5), np.zeros(len(values))])

    slow_model = type(model)(**{**model.__dict__, "matrix": slow, "direct": lambda rows: pd.DataFrame(
        slow(rows.to_numpy()), columns=["prob_up", "expected_return"])})
    values = _rows(model.feature_columns, 3).to_numpy()
    calls = [lambda: slow_model.predict_values(values),
             lambda: slow_model.predict_rows(pd.DataFrame(values, columns=list(model.feature_columns)))]
    threads = [threading.Thread(target=calls[i % 2]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 8 and max(overlaps) == 1
