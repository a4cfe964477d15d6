"""Book-walk fills chosen in ``costs:``: ``qt exchange serve --params FILE`` walks ``costs.book`` when
``costs.fill_model`` is book and ``--book`` is not given (the flag wins); a book fill model without a
usable book is one line, exit 2, before the port is bound; the paper broker still refuses book fills."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import yaml

from exchange import make_ccxt
from exchange.book_fills import book_source
from qt.config import CostParams
from qt.errors import ConfigError
from qt.procs import ManagedProcess, free_port
from tests.cli.support import QT, assert_one_line_error, run_qt
from tests.exchange.support import API_KEY, API_SECRET, NOW, NOW_MS
from tests.exchange.test_book_fills import _close_at, _levels_file


def _params(path: Path, **costs) -> Path:
    path.write_text(yaml.safe_dump({"costs": costs}))
    return path


@pytest.mark.parametrize("flag, costs, chosen", [
    (None, CostParams(), None),  # fixed: the bar close
    (None, CostParams(book="x/levels.parquet"), None),  # a path alone does not switch the fill model
    (None, CostParams(fill_model="book", book="x/levels.parquet"), (Path("x/levels.parquet"), "costs.book")),
    (Path("flag.parquet"), CostParams(fill_model="book", book="x/levels.parquet"), (Path("flag.parquet"), "--book")),
    (Path("flag.parquet"), None, (Path("flag.parquet"), "--book")),
])
def test_the_flag_wins_and_costs_choose_the_book_only_with_fill_model_book(flag, costs, chosen):
    assert book_source(flag, costs) == chosen


def test_fill_model_book_without_a_book_path_is_a_config_error():
    with pytest.raises(ConfigError, match="costs.fill_model: book needs costs.book"):
        book_source(None, CostParams(fill_model="book"))


@pytest.mark.parametrize("costs, extra, fragment", [
    ({"fill_model": "book"}, [], "costs.fill_model: book needs costs.book"),
    ({"fill_model": "book", "book": "missing/levels.parquet"}, [], "costs.book missing/levels.parquet: no levels"),
    ({"fill_model": "book", "book": "GOOD"}, ["--book", "missing-flag"], "--book missing-flag: no levels"),
])
def test_an_unusable_book_from_params_is_one_line_exit_2(tmp_path, datadir, costs, extra, fragment):
    good = _levels_file(tmp_path / "levels.parquet", [NOW_MS - 1_000])
    costs = {k: (str(good) if v == "GOOD" else v) for k, v in costs.items()}
    params = _params(tmp_path / "params.yaml", **costs)
    res = run_qt(["exchange", "serve", "--data", str(datadir), "--port", str(free_port()), "--params", str(params),
                  *extra], tmp_path / "home")
    assert_one_line_error(res, fragment)


@pytest.mark.slow
def test_a_server_started_from_params_walks_the_costs_book(tmp_path, datadir):
    book = _levels_file(tmp_path / "levels.parquet", [NOW_MS - 1_000], scale=0.01)  # asks 100 x .01, 101 x .01
    params = _params(tmp_path / "params.yaml", fill_model="book", book=str(book))
    port = free_port()
    argv = [QT, "exchange", "serve", "--data", str(datadir), "--port", str(port), "--now", NOW, "--params", str(params)]
    env = {**os.environ, "QT_HOME": str(tmp_path / "home"), "QT_EXCHANGE_API_KEYS": json.dumps({API_KEY: API_SECRET})}
    server = ManagedProcess("qt exchange serve --params", argv, env=env, log_path=tmp_path / "server.log")
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_until(lambda: httpx.get(f"{url}/api/v3/ping", timeout=1.0).status_code == 200, 60.0, "ping")
        perp = make_ccxt("perp", url, api_key=API_KEY, secret=API_SECRET)
        perp.load_markets()
        order = perp.create_order("BTC/USDT:USDT", "market", "buy", 0.02)  # 0.01 @100 + 0.01 @101 vs mid 99.5
        assert order["status"] == "closed" and order["filled"] == 0.02
        assert order["average"] == pytest.approx(_close_at(datadir, "binanceusdm", NOW_MS) * (1 + 1 / 99.5), rel=1e-9)
    finally:
        server.stop()


def test_the_paper_broker_still_refuses_book_fills_and_the_path_leaves_decision_digests_alone():
    from executor.paper import PaperBroker
    from qt.config import Params
    from training.trials import decision_digest

    with pytest.raises(ConfigError, match="fill_model: book"):
        PaperBroker(CostParams(fill_model="book", book="levels.parquet"))
    book = Params.model_validate({"costs": {"fill_model": "book"}})
    assert decision_digest(book.model_copy(update={"costs": CostParams(fill_model="book", book="a")})) == \
        decision_digest(book)
