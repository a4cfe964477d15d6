"""Validation and features map one Prefect task per symbol; on a Dask LocalCluster they write
exactly what the local (thread pool) runner writes: the same validation record and report, the
same quarantine, the same feature and label Parquet files, byte for byte."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from data import lake

from flows import stages as pipeline
from data.sources import lake_root
from qt.config import ValidationParams, load_params
from qt.errors import DataError
from qt.paths import StatePaths
from data.synthetic import generate_market
from data.validate import CANDLE_SUITE, merge_reports, validate_candles, validate_symbol, validate_symbols

pytestmark = pytest.mark.slow

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
BAD = "SOL/USDT"  # one corrupted candle (high below low): quarantined, left out of features


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _params(runner: str):
    return load_params(None, {"data": {"source": "synthetic:5", "symbols": SYMBOLS},
                              "synthetic": {"bars": 700}, "runner": {"task_runner": runner, "workers": 2}})


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A state directory with a collected lake (no Prefect: plain stage) and one corrupted symbol."""
    paths = StatePaths(tmp_path_factory.mktemp("collected") / "home").ensure()
    params = _params("local")
    pipeline.collect(params, paths)
    root = lake_root(params, paths)
    bad = lake.read_candles(root, [BAD], "1h")
    i = 500
    bad.loc[i, "high"] = bad.loc[i, "low"] * 0.9
    lake.write_candles(root, BAD, "1h", bad.drop(columns="symbol"))
    return paths.home


def _run(collected, tmp_path, runner: str):
    """validate + features on a copy of the collected state: through the flow on ``runner``, or
    with ``plain`` the stage functions the CLI calls (no Prefect, no fan-out callable)."""
    from flows.stage_tasks import symbol_stages_flow

    home = tmp_path / runner
    shutil.copytree(collected, home)  # copy2: the raw partitions keep their mtimes (manifest fingerprints)
    paths = StatePaths(home)
    saved = dict(os.environ)
    try:
        if runner == "plain":
            summary = {**pipeline.validate(_params("local"), paths), **pipeline.features(_params("local"), paths)}
        else:
            summary = symbol_stages_flow(_params(runner), str(home))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    written = {p.relative_to(home): p.read_bytes()
               for d in (paths.features, paths.reports) for p in sorted(d.rglob("*"))
               if p.is_file() and p.name != "features.json"}  # features.json carries timings
    return summary, written


@pytest.fixture(scope="module")
def local_run(harness, collected, tmp_path_factory):
    return _run(collected, tmp_path_factory.mktemp("runs"), "local")


def test_dask_local_cluster_writes_what_the_local_runner_writes(local_run, collected, tmp_path):
    local, local_files = local_run
    dask, dask_files = _run(collected, tmp_path, "dask")

    assert local["validation"]["quarantined_symbols"] == [BAD]
    assert local["validation"]["passed_symbols"] == ["BTC/USDT", "ETH/USDT"]
    record = json.loads(local_files[next(k for k in local_files if k.name == "validation.json")])
    assert record["symbols"][BAD]["status"] == "quarantined"
    assert any(f["symbol"] == BAD and f["column"] == "high,low" for f in record["candles"]["failed_expectations"])

    parquet = sorted(str(k) for k in local_files if k.suffix == ".parquet")
    assert parquet and not any("SOL_USDT" in k for k in parquet)
    assert any("BTC_USDT" in k for k in parquet) and any("ETH_USDT" in k for k in parquet)
    assert sorted(local_files) == sorted(dask_files)
    assert local_files == dask_files  # every byte: Parquet partitions, manifests, validation.json/.md
    assert {k: v for k, v in local["validation"].items() if k != "report"} == \
        {k: v for k, v in dask["validation"].items() if k != "report"}  # "report": its own home's path
    for key in ("rows", "label_rows", "rows_computed", "feature_set_hash", "label_set_hash", "columns"):
        assert local["features"][key] == dask["features"][key]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # in the UI: a validation task per batch of symbols
        names = [t.name for t in client.read_task_runs() if t.name.startswith(("validate-", "features-"))]
    ordered = sorted(SYMBOLS)  # one batch (VALIDATION_BATCH_SYMBOLS > 3), named by its first and last symbol
    assert sorted(set(names)) == sorted({f"validate-{ordered[0]}..{ordered[-1]}"} |
                                            {"features-BTC/USDT", "features-ETH/USDT"})  # one per symbol passed
    assert len(names) == 2 * (1 + 2)  # both runs, nothing run twice


def test_the_stage_functions_without_a_flow_write_the_same_files(local_run, collected, tmp_path):
    """``qt validate`` / ``qt features`` (no Prefect: one validation run split per symbol, the
    feature store's own thread pool) write what the per-symbol tasks write."""
    _, local_files = local_run
    plain, plain_files = _run(collected, tmp_path, "plain")
    assert plain["validation"]["quarantined_symbols"] == [BAD]
    assert plain_files == local_files


def test_a_symbol_validated_alone_gets_the_result_it_gets_among_others():
    """The split is sound: each symbol validated on its own gives exactly its part of one run over
    the whole frame - failures, counts, example rows and the hash of its candles."""
    candles = generate_market(SYMBOLS, "1h", load_params(None).synthetic.model_copy(update={"bars": 400}), seed=2)
    i = candles.index[candles["symbol"] == "ETH/USDT"][200]
    candles.loc[i, "low"] = -1.0
    params = ValidationParams()
    together = validate_symbols(candles, None, "1h", params)
    alone = [validate_symbol(s, g.reset_index(drop=True), None, "1h", params)
             for s, g in candles.groupby("symbol", sort=True)]
    assert together == alone
    assert [r.quarantined for r in alone] == [False, True, False]
    merged = merge_reports(CANDLE_SUITE, [r.candles for r in alone])
    whole = validate_candles(candles, "1h", params)
    assert merged == whole
    found = next(f for f in merged.errors if f.column == "low")
    assert found.examples[0].startswith(f"row 200: ETH/USDT {candles.loc[i, 'timestamp'].isoformat()}")


def _touch_unless_bad(symbol: str, *, out: str, bad: list[str]) -> str:
    if symbol in bad:
        raise DataError(f"{symbol}: no candles")
    (Path(out) / symbol.replace("/", "_")).write_text("done")
    return symbol


def test_a_failing_symbol_lets_the_others_finish_then_every_failure_is_named(harness, tmp_path):
    from prefect import flow

    from flows.runner import make_task_runner, symbol_map

    @flow
    def fan_out(symbols: list[str]) -> list:
        return symbol_map("demo")(_touch_unless_bad, symbols, out=str(tmp_path), bad=["AAA/USDT", "ZZZ/USDT"])

    runner = make_task_runner(_params("local").runner)
    with pytest.raises(DataError, match="AAA/USDT: no candles") as err:
        fan_out.with_options(task_runner=runner)(["AAA/USDT", *SYMBOLS, "ZZZ/USDT"])
    assert "also failed: ZZZ/USDT: no candles" in "".join(getattr(err.value, "__notes__", []))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.replace("/", "_") for s in SYMBOLS)
    assert fan_out.with_options(task_runner=runner)(SYMBOLS) == SYMBOLS  # in order, when all succeed
