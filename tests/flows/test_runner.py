"""The ``runner:`` setting alone decides where per-symbol tasks run; a wrong one stops at start-up."""

from __future__ import annotations

import socket

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.runner import make_task_runner
from qt.config import load_params
from qt.errors import ConfigError


def test_local_is_the_default_a_thread_pool_of_runner_workers():
    params = load_params(None, {"runner": {"workers": 3}})
    runner = make_task_runner(params.runner)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    assert make_task_runner(params.runner, threads=params.collect.concurrency)._max_workers == 4


def test_dask_without_an_address_is_an_in_process_local_cluster_of_runner_workers():
    runner = make_task_runner(load_params(None, {"runner": {"task_runner": "dask", "workers": 3}}).runner)
    assert isinstance(runner, DaskTaskRunner) and runner.address is None
    assert str(runner.cluster_class).endswith("LocalCluster") and runner.cluster_kwargs["n_workers"] == 3


def test_dask_with_an_address_uses_that_scheduler():
    with socket.create_server(("127.0.0.1", 0)) as listening:  # something answers at the address
        address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        params = load_params(None, {"runner": {"task_runner": "dask", "dask_address": address}})
        assert make_task_runner(params.runner).address == address


def test_an_address_where_no_scheduler_answers_is_one_line_before_any_flow_starts():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nothing listens there
    params = load_params(None, {"runner": {"task_runner": "dask", "dask_address": f"tcp://127.0.0.1:{port}"}})
    with pytest.raises(ConfigError, match=f"runner.dask_address tcp://127.0.0.1:{port}: no Dask scheduler"):
        make_task_runner(params.runner)


def test_the_old_collect_keys_still_choose_the_runner():
    params = load_params(None, {"collect": {"task_runner": "dask", "dask_address": "tcp://sched:8786"}})
    assert (params.runner.task_runner, params.runner.dask_address) == ("dask", "tcp://sched:8786")
    assert "task_runner" not in params.collect.model_dump()


@pytest.mark.parametrize("overrides, words", [
    ({"collect": {"task_runner": "dask"}, "runner": {"task_runner": "local"}}, "runner.task_runner only"),
    ({"runner": {"dask_address": "tcp://sched:8786"}}, "set runner.task_runner: dask"),
    ({"runner": {"task_runner": "dask", "dask_address": "sched"}}, "tcp://HOST:PORT"),
    ({"runner": {"task_runner": "ray"}}, "runner.task_runner"),
    ({"runner": {"workers": 0}}, "runner.workers"),
])
def test_a_wrong_runner_setting_is_one_line_naming_the_fix(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_params(None, overrides)
    message = str(err.value)
    assert words in message and "\n" not in message
