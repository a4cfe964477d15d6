"""The paper, perps and spot brokers are one interface (``executor.broker.Broker``) to the loop."""

from __future__ import annotations

import pytest

from executor.broker import Broker, SimulatedBroker
from executor.live.broker import CcxtBroker
from executor.live.spot import SpotBroker
from executor.paper import PaperBroker
from qt.config import CostParams


def test_the_paper_broker_is_a_broker_that_can_also_close_at_a_close():
    broker = PaperBroker(CostParams())
    assert isinstance(broker, Broker) and isinstance(broker, SimulatedBroker)


@pytest.mark.parametrize("cls", [CcxtBroker, SpotBroker])
def test_the_live_brokers_have_every_method_the_loop_calls(cls):
    for name in ("pending_orders", "protective", "submit", "process_bar", "cancel_all"):
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
    assert not hasattr(cls, "close_at_close")  # an exchange cannot fill at a past close
