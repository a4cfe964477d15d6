"""Testnet mode never reaches Binance production: a production host in --exchange-url is refused in one
line (exit 2) before any client is built; only --mode live --i-understand-live trades on mainnet."""

import pytest

from qt.live_guard import is_binance_production_host, refuse_production_url_for_testnet
from qt.errors import UserError
from tests.cli.support import assert_one_line_error, run_qt

pytestmark = pytest.mark.slow

FAKE_KEYS = {"QT_API_KEY": "k" * 64, "QT_API_SECRET": "s" * 64}

PRODUCTION_URLS = [
    "https://fapi.binance.com",
    "https://api3.binance.com/",
    "https://FAPI.Binance.COM",
    "https://fapi.binance.com:443/fapi/v1",
    "https://api.binance.com.",  # trailing dot: the same host to DNS
    "https://dapi.binance.com",
    "https://papi.binance.com",
    "https://eapi.binance.com",
    "https://api-gcp.binance.com",
    "https://data-api.binance.vision",
    "https://fapi1.binance.com",
    "https://api.binance.us",
    "https://user:pw@fapi.binance.com",
]


@pytest.mark.parametrize("url", PRODUCTION_URLS)
def test_live_flag_testnet_refuses_production_host(tmp_path, url):
    res = run_qt(["execute", "--mode", "testnet", "--exchange-url", url], tmp_path, **FAKE_KEYS)
    assert_one_line_error(res, "production")
    assert "--i-understand-live" in res.stderr
    assert not (tmp_path / "executor").exists() and not list(tmp_path.rglob("*.db"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8900", "http://localhost:8900/", "https://testnet.binancefuture.com",
                                 "https://testnet.binance.vision", "https://binance.com.example.org",
                                 "https://notbinance.com"])
def test_live_flag_testnet_accepts_non_production_host(url):
    assert not is_binance_production_host(url)
    refuse_production_url_for_testnet(url)  # no exception


@pytest.mark.parametrize("url", PRODUCTION_URLS)
def test_live_flag_production_hosts_are_recognised(url):
    assert is_binance_production_host(url)
    with pytest.raises(UserError, match="production"):
        refuse_production_url_for_testnet(url)


def test_live_flag_live_mode_still_needs_the_confirmation(tmp_path):
    res = run_qt(["execute", "--mode", "live"], tmp_path, **FAKE_KEYS)
    assert_one_line_error(res, "--i-understand-live")


def test_live_flag_live_mode_takes_no_exchange_url(tmp_path):
    res = run_qt(["execute", "--mode", "live", "--i-understand-live", "--exchange-url",
                  "https://fapi.binance.com"], tmp_path, **FAKE_KEYS)
    assert_one_line_error(res, "--exchange-url is for --mode testnet")


def test_live_flag_testnet_loopback_passes_the_guard(tmp_path):
    """A loopback test exchange gets past the production check (it fails later, on the missing params)."""
    res = run_qt(["execute", "--mode", "testnet", "--exchange-url", "http://127.0.0.1:9", "--params",
                  str(tmp_path / "missing.yaml")], tmp_path, **FAKE_KEYS)
    assert res.returncode == 2 and "production" not in res.stderr, res.stderr
