"""``qt collect --alt`` from the APIs (``alt.source: api``), end to end through the real CLI and httpx
against a loopback server that answers like alternative.me and CryptoPanic (there is no network
here): the series land in the lake, CryptoPanic's pages are followed to the last one and no
further, and the token is sent but never reaches stdout, stderr or any file of the state."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
import yaml

from data.alt_lake import read_alt
from data.sources import lake_root
from qt.config import load_params
from qt.paths import StatePaths
from tests.cli.support import assert_one_line_error, run_qt

TOKEN = "tok-SECRET-8c1f"
FNG_DAYS = pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC")
# two pages, newest first, in CryptoPanic's shape; the second page is the last (next: null)
POSTS = [[("2024-01-09T12:00:00Z", "Bitcoin ETF inflows hit a record", 9), ("2024-01-09T08:30:00Z", "Miners sell", 1)],
         [("2024-01-08T22:10:00Z", "Exchange halts withdrawals", 0)]]


def _fng_answer() -> dict:
    data = [{"value": str(40 + i), "value_classification": "Fear", "timestamp": str(int(day.timestamp()))}
            for i, day in enumerate(FNG_DAYS)]
    return {"name": "Fear and Greed Index", "data": data[::-1], "metadata": {"error": None}}


def _posts_answer(page: int, base: str) -> dict:
    results = [{"kind": "news", "domain": "x.com", "source": {"title": "X", "domain": "x.com"}, "title": title,
                "published_at": at, "id": page * 10 + i, "votes": {"positive": up, "negative": 0}}
               for i, (at, title, up) in enumerate(POSTS[page - 1])]
    nxt = f"{base}?auth_token={TOKEN}&page={page + 1}" if page < len(POSTS) else None
    return {"count": 3, "next": nxt, "previous": None, "results": results}


class _Api(BaseHTTPRequestHandler):
    requests: ClassVar[list] = []
    token_ok: ClassVar[bool] = True

    def do_GET(self):  # http.server calls it by this name
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests.append((url.path, query))
        if url.path == "/fng/" and query == {"limit": "0", "format": "json"}:
            return self._json(200, _fng_answer())
        if url.path == "/api/v1/posts/":
            if query.get("auth_token") != TOKEN or not type(self).token_ok:
                return self._json(401, {"status": "Incomplete", "info": "Token not found"})
            page = int(query.get("page", 1))
            if page > len(POSTS):
                return self._json(404, {"detail": "Invalid page."})
            return self._json(200, _posts_answer(page, f"http://{self.headers['Host']}{url.path}"))
        return self._json(404, {"detail": "Not found."})

    def _json(self, status: int, body: dict):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def api():
    _Api.requests, _Api.token_ok = [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _params_file(tmp_path, base: str):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"source": "synthetic:3", "symbols": ["BTC/USDT"]}, "synthetic": {"bars": 300},
        "alt": {"series": ["fear_greed", "headlines"], "source": "api", "fng_url": f"{base}/fng/",
                "cryptopanic_url": f"{base}/api/v1/posts/", "cryptopanic_pages": 5}}))
    return path


def _files_holding(root, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_api_sources_land_in_the_lake_and_the_token_is_sent_but_never_written(tmp_path, api):
    home, params = tmp_path / "home", _params_file(tmp_path, api)
    res = run_qt(["collect", "--params", str(params)], home, CRYPTOPANIC_TOKEN=TOKEN)
    assert res.returncode == 0, res.stderr
    lake = lake_root(load_params(params), StatePaths(home))
    fng = read_alt(lake, "fear_greed")
    assert fng["timestamp"].tolist() == list(FNG_DAYS) and fng["value"].tolist() == [40.0 + i for i in range(10)]
    heads = read_alt(lake, "headlines").sort_values("timestamp")
    assert heads["title"].tolist() == ["Exchange halts withdrawals", "Miners sell", "Bitcoin ETF inflows hit a record"]
    assert heads["votes_positive"].tolist() == [0.0, 1.0, 9.0]
    pages = [q["page"] for path, q in _Api.requests if path == "/api/v1/posts/"]
    assert pages == ["1", "2"]  # followed to the last page, not to cryptopanic_pages (a page past it is a 404)
    assert all(q["auth_token"] == TOKEN for path, q in _Api.requests if path == "/api/v1/posts/")
    assert TOKEN not in res.stdout + res.stderr
    assert _files_holding(home, TOKEN) == []


def test_a_refused_token_is_one_line_naming_the_host_and_status_never_the_token(tmp_path, api):
    _Api.token_ok = False
    home = tmp_path / "home"
    res = run_qt(["collect", "--params", str(_params_file(tmp_path, api))], home, CRYPTOPANIC_TOKEN=TOKEN)
    assert res.returncode == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "127.0.0.1: HTTP 401" in errors[0], res.stderr
    assert "Traceback" not in res.stderr and TOKEN not in res.stdout + res.stderr
    assert _files_holding(home, TOKEN) == []


def test_an_api_url_with_a_query_or_another_scheme_is_refused_at_start_up(tmp_path):
    for bad in ("ftp://api.alternative.me/fng/", "https://cryptopanic.com/api/v1/posts/?auth_token=x"):
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump({"alt": {"series": ["fear_greed"], "source": "api", "fng_url": bad}}))
        res = run_qt(["collect", "--params", str(path)], tmp_path / "home")
        assert_one_line_error(res, "alt.fng_url")
        assert "must be an http(s) URL without a query" in res.stderr and "auth_token=x" not in res.stderr
