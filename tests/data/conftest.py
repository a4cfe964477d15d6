"""A real local exchange (subprocess, loopback) over a small synthetic data dir.

The data dir is written by ``tests.data.support.build_source`` (plain pandas, the flat
``../shared/data`` layout); the tests compare what the collector stored against those files
read back with pandas: the expected values never come from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange import LocalExchange
from tests.data.support import NOW_AFTER_ALL, build_source


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("exchange-src"))


@pytest.fixture(scope="session")
def exchange(source_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("exchange-log") / "exchange.log"
    with LocalExchange(source_dir, now=NOW_AFTER_ALL, log_path=log) as ex:
        yield ex


@pytest.fixture
def clean_exchange(exchange):
    """The shared exchange with no faults and no latency (counters reset)."""
    exchange.set_faults({})
    yield exchange
    exchange.set_faults({})
