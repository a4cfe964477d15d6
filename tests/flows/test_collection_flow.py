"""The Prefect collection flow maps one task per symbol; on Dask it stores the same lake."""

from __future__ import annotations

import os

import pytest

from data.sources import lake_root
from qt.config import load_params
from qt.paths import StatePaths

pytestmark = pytest.mark.slow

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def _run(tmp_path, runner: str):
    from flows.collect import collection_flow

    paths = StatePaths(tmp_path / runner).ensure()
    params = load_params(None, {"data": {"source": "synthetic:5", "symbols": SYMBOLS},
                                "synthetic": {"bars": 800},
                                "collect": {"concurrency": 2}, "runner": {"task_runner": runner, "workers": 2}})
    saved = dict(os.environ)
    try:
        out = collection_flow(params, str(paths.home))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out, _files(lake_root(params, paths))


def test_local_and_dask_runners_store_identical_lakes(harness, tmp_path):
    local, local_files = _run(tmp_path, "local")
    dask, dask_files = _run(tmp_path, "dask")
    assert local["data"]["rows"] == dask["data"]["rows"] == 3 * 800
    assert [s["symbol"] for s in dask["data"]["collected"]["symbols"]] == SYMBOLS
    assert local_files and local_files == dask_files
    assert local["data"]["sha256"] == dask["data"]["sha256"]
