"""The served ensemble answers exactly as its members do: the serving entry
(``EnsembleModel.predict_matrix``, tree members called below their scikit-learn wrappers) gives the
same bits as each member's own ``predict_proba`` and as the pyfunc's ``predict``, for one row as for
many, whatever the thread count the service sets after loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qt.config import TrainParams
from serving.champion import use_one_thread
from training.ensemble import EnsembleModel, member_predictor
from training.models import fit_member

COLUMNS = [f"f{i}" for i in range(12)]


@pytest.fixture(scope="module")
def ensemble() -> EnsembleModel:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(800, len(COLUMNS)))
    up = (x[:, 0] - 0.5 * x[:, 3] + 0.7 * rng.normal(size=len(x)) > 0).astype(int)
    train = TrainParams(n_jobs=2, xgboost={"n_estimators": 40, "max_depth": 3},
                        lightgbm={"n_estimators": 40, "num_leaves": 7, "subsample": 0.8})
    members = {name: fit_member(name, x[:, :8] if name == "lightgbm" else x, up, train)
               for name in ("xgboost", "lightgbm")}
    return EnsembleModel(COLUMNS, members, {"xgboost": 0.4, "lightgbm": 0.6}, 0.001, 0.03,
                         member_columns={"xgboost": COLUMNS, "lightgbm": COLUMNS[:8]})


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(COLUMNS)))


@pytest.mark.parametrize("n", [1, 2, 37, 500])
def test_each_tree_member_answers_exactly_its_own_predict_proba(ensemble, n):
    x = _rows(n, seed=n)
    for name, member in ensemble.members.items():
        cols = [COLUMNS.index(c) for c in ensemble.member_columns[name]]
        want = member.predict_proba(x[:, cols])[:, 1].astype(np.float64)
        np.testing.assert_array_equal(member_predictor(member)(x[:, cols]), want, err_msg=name)


@pytest.mark.parametrize("n", [1, 5, 300])
def test_the_serving_entry_answers_exactly_as_the_pyfunc_and_the_members(ensemble, n):
    x = _rows(n, seed=100 + n)
    frame = pd.DataFrame(x, columns=COLUMNS)
    out = ensemble.predict_matrix(x)
    np.testing.assert_array_equal(out, ensemble.predict(None, frame).to_numpy())
    members = ensemble.member_probabilities(frame)
    for name, member in ensemble.members.items():
        cols = [COLUMNS.index(c) for c in ensemble.member_columns[name]]
        np.testing.assert_array_equal(members[name].to_numpy(), member.predict_proba(x[:, cols])[:, 1])
    np.testing.assert_allclose(out[:, 0], 0.4 * members["xgboost"] + 0.6 * members["lightgbm"], rtol=1e-15)


def test_the_thread_count_set_after_loading_changes_no_answer(ensemble):
    """``serving.champion.use_one_thread`` lowers ``n_jobs`` after the model answered once."""
    x = _rows(64, seed=7)
    before = ensemble.predict_matrix(x)

    class _Pyfunc:  # what use_one_thread reaches through
        def unwrap_python_model(self):
            return ensemble

    use_one_thread(_Pyfunc())
    assert all(m.n_jobs == 1 for m in ensemble.members.values())
    np.testing.assert_array_equal(ensemble.predict_matrix(x), before)


def test_the_serving_entry_refuses_values_of_the_wrong_shape_or_not_finite(ensemble):
    from qt.errors import DataError

    with pytest.raises(DataError, match="12"):
        ensemble.predict_matrix(np.zeros((2, 5)))
    x = _rows(3, seed=1)
    x[2, 4] = np.inf
    with pytest.raises(DataError, match="row 2.*f4"):
        ensemble.predict_matrix(x)


def test_a_model_that_already_answered_pickles_and_answers_the_same_after_loading(ensemble):
    """Training predicts with the ensemble before MLflow pickles it: the per-process predictor
    cache must not travel in the pickle (it holds bound library methods)."""
    import cloudpickle

    x = _rows(20, seed=9)
    before = ensemble.predict_matrix(x)
    blob = cloudpickle.dumps(ensemble)
    again = cloudpickle.loads(blob)
    assert "_fast" not in again.__dict__
    np.testing.assert_array_equal(again.predict_matrix(x), before)
