"""Classification metrics agree with hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import pytest

from training.metrics import compute_classification_metrics


def test_metrics_on_a_tiny_hand_checked_example():
    up = [1, 0, 1, 0]
    prob = [0.8, 0.3, 0.4, 0.6]
    # AUC: positive/negative pairs (0.8>0.3, 0.8>0.6, 0.4>0.3, 0.4<0.6) -> 3/4
    # accuracy: predictions 1,0,0,1 vs 1,0,1,0 -> 2/4
    # log loss: -(ln .8 + ln .7 + ln .4 + ln .4)/4
    m = compute_classification_metrics(up, prob, fwd_return=[0.02, -0.01, 0.01, -0.03],
                                       expected_return=[0.03, -0.02, 0.001, 0.0])
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.7) + 2 * math.log(0.4)) / 4)
    # ranks of expected (4,1,3,2) vs realised (4,2,3,1): d^2 = 0+1+0+1 -> rho = 1 - 6*2/(4*15) = 0.8
    assert m["ic"] == pytest.approx(0.8)
    assert m["rows"] == 4


def test_auc_is_undefined_with_one_class_and_ic_without_returns():
    m = compute_classification_metrics([1, 1, 1], [0.6, 0.7, 0.8])
    assert math.isnan(m["auc"]) and math.isnan(m["ic"])
    assert m["accuracy"] == 1.0
