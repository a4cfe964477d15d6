"""The API adapters' parsers on recorded-shape answers (alternative.me, CryptoPanic), the scraped vote
strings, and the CryptoPanic token kept out of every message."""

from __future__ import annotations

import pandas as pd
import pytest

from data import alt_sources
from data.alt_sources import parse_cryptopanic_json, parse_fng_json, parse_vote_string
from qt.errors import DataError, QTError, UserError

# the shape of https://api.alternative.me/fng/?limit=0&format=json (newest first, unix seconds as strings)
FNG_ANSWER = """{
  "name": "Fear and Greed Index",
  "data": [
    {"value": "64", "value_classification": "Greed", "timestamp": "1735603200", "time_until_update": "-1735603189"},
    {"value": "65", "value_classification": "Greed", "timestamp": "1735516800"},
    {"value": "8", "value_classification": "Extreme Fear", "timestamp": "1517443200"}
  ],
  "metadata": {"error": null}
}"""

# the shape of CryptoPanic's /api/v1/posts/?auth_token=...&public=true
PANIC_ANSWER = """{
  "count": 2, "next": "https://cryptopanic.com/api/v1/posts/?page=2", "previous": null,
  "results": [
    {"kind": "news", "domain": "coindesk.com",
     "source": {"title": "CoinDesk", "region": "en", "domain": "coindesk.com", "path": null},
     "title": "Bitcoin ETF inflows hit record", "published_at": "2024-12-31T17:30:00Z", "slug": "x", "id": 1,
     "votes": {"negative": 1, "positive": 9, "important": 5, "liked": 2, "disliked": 0, "lol": 0, "toxic": 0,
               "saved": 1, "comments": 0}},
    {"kind": "news", "domain": "decrypt.co", "source": {"title": "Decrypt", "domain": "decrypt.co"},
     "title": "Exchange halts withdrawals", "published_at": "2024-12-31T18:05:12+01:00", "id": 2, "votes": {}}
  ]
}"""


def test_alternative_me_answer_parses_to_days():
    got = parse_fng_json(FNG_ANSWER)
    assert got["timestamp"].tolist() == [pd.Timestamp(d, tz="UTC") for d in ("2018-02-01", "2024-12-30", "2024-12-31")]
    assert got["value"].tolist() == [8.0, 65.0, 64.0]
    assert got["classification"].tolist() == ["Extreme Fear", "Greed", "Greed"]


def test_alternative_me_error_and_bad_shape_are_data_errors():
    with pytest.raises(DataError, match="answered an error: Rate limited"):
        parse_fng_json('{"data": [], "metadata": {"error": "Rate limited"}}')
    with pytest.raises(DataError, match="not understood"):
        parse_fng_json('{"data": [{"value": "x"}]}')


def test_cryptopanic_answer_parses_to_headlines():
    got = parse_cryptopanic_json(PANIC_ANSWER)
    assert got["timestamp"].tolist() == [pd.Timestamp("2024-12-31 17:30", tz="UTC"),
                                         pd.Timestamp("2024-12-31 17:05:12", tz="UTC")]
    assert got["source"].tolist() == ["coindesk.com", "decrypt.co"]
    assert got.loc[0, ["votes_positive", "votes_negative", "votes_important", "votes_saved"]].tolist() == \
        [9.0, 1.0, 5.0, 1.0]
    assert got.loc[1, "votes_positive"] == 0.0
    with pytest.raises(DataError, match="CryptoPanic answer not understood"):
        parse_cryptopanic_json('{"results": [{"title": "no time"}]}')


def test_scraped_vote_strings():
    got = parse_vote_string("10 important: votes, 6 positive: votes, 5 like: votes, 4 saves: votes, 1 comments: votes")
    assert (got["votes_important"], got["votes_positive"], got["votes_liked"], got["votes_saved"],
            got["votes_comments"], got["votes_negative"]) == (10.0, 6.0, 5.0, 4.0, 1.0, 0.0)
    assert parse_vote_string(None)["votes_positive"] == 0.0
    with pytest.raises(DataError, match="cannot read"):
        parse_vote_string("many positive votes")


def test_the_cryptopanic_token_never_appears_in_a_message(monkeypatch):
    import httpx

    secret = "tok-SECRET-123"

    def failing_get(url, params=None, timeout=None):
        raise httpx.ConnectError(f"cannot reach {url}?auth_token={params['auth_token']}")

    monkeypatch.setenv(alt_sources.TOKEN_ENV, secret)
    monkeypatch.setattr(httpx, "get", failing_get)
    with pytest.raises(QTError) as err:
        alt_sources.fetch_cryptopanic(pages=1)
    assert secret not in str(err.value) and "cryptopanic.com" in str(err.value)
    monkeypatch.delenv(alt_sources.TOKEN_ENV)
    with pytest.raises(UserError, match="CRYPTOPANIC_TOKEN is not set"):
        alt_sources.fetch_cryptopanic(pages=1)
