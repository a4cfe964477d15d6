"""Where the alt series come from: a file adapter and API adapters, all giving the frames
``data.alt_lake.with_availability`` stores.

* File (``parquet:DIR``): ``DIR/alt/fear_greed.parquet``, ``onchain_btc.parquet``,
  ``news_headlines.parquet``, laid out like ``../shared/data`` (its README describes them).
* alternative.me (``https://api.alternative.me/fng/?limit=0&format=json``): the whole Fear & Greed
  history in one JSON answer; ``parse_fng_json`` turns it into rows.
* CryptoPanic (``/api/v1/posts/``, token from the environment variable ``CRYPTOPANIC_TOKEN``):
  ``parse_cryptopanic_json`` turns one page into headline rows. The token goes into the request
  only: errors name the host, never the URL (which holds it).
* On-chain: no free API gives MVRV/NUPL/realised price with history, so the adapter is an
  interface (``OnchainSource``) with the file adapter as its implementation; a user with a data
  vendor implements ``fetch()`` and passes it to ``data.alt_collect.collect_alt``.

Parsers are pure (text -> frame) so they are unit-tested on recorded-shape strings; the fetchers
are thin ``httpx`` calls around them, at ``alt.fng_url`` / ``alt.cryptopanic_url`` (the real hosts
by default; ``tests/data/test_alt_api.py`` points them at a loopback server speaking both APIs).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Protocol

import pandas as pd

from data.alt_lake import VOTE_KINDS
from qt.errors import DataError, QTError, UserError

FNG_URL = "https://api.alternative.me/fng/"  # asked with limit=0&format=json
CRYPTOPANIC_URL = "https://cryptopanic.com/api/v1/posts/"
TOKEN_ENV = "CRYPTOPANIC_TOKEN"
FILES = {"fear_greed": "fear_greed.parquet", "onchain_btc": "onchain_btc.parquet",
         "headlines": "news_headlines.parquet"}
ONCHAIN_COLUMNS = ["timestamp", "mvrv", "nupl", "realized_price", "etf_flow_usd"]
# the scraped CryptoPanic strings name some kinds differently from the API's vote keys
_VOTE_ALIASES = {"like": "liked", "dislike": "disliked", "save": "saved", "saves": "saved"}
_VOTE_ITEM = re.compile(r"^\s*(\d+)\s+([a-z]+)\s*:\s*votes?\s*$")


class OnchainSource(Protocol):
    """Daily BTC on-chain metrics and ETF flows: ``fetch()`` -> ``ONCHAIN_COLUMNS`` (timestamp =
    00:00 UTC of the day described, NaN where a metric has no value)."""

    def fetch(self) -> pd.DataFrame: ...


class FileOnchainSource:
    """The on-chain adapter reading ``DIR/alt/onchain_btc.parquet``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def fetch(self) -> pd.DataFrame:
        return read_file_series(self.directory, "onchain_btc")


def read_file_series(directory: Path, name: str) -> pd.DataFrame:
    """One alt file of a ``../shared/data``-like directory, as the lake's input columns."""
    path = Path(directory) / "alt" / FILES[name]
    if not path.is_file():
        raise DataError(f"{path} absent: alt.series lists {name} but the source has no such file; "
                        f"remove it from alt.series or point alt.source at a directory holding alt/{FILES[name]}")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is the user's to fix
        raise DataError(f"{path}: unreadable Parquet ({type(exc).__name__}); replace the file") from None
    if name == "headlines":
        if "votes" not in frame.columns:
            raise DataError(f"{path}: missing column votes; expected timestamp, title, source, votes")
        votes = pd.DataFrame([parse_vote_string(v) for v in frame["votes"]], index=frame.index)
        return pd.concat([frame.drop(columns=["votes"]), votes], axis=1)
    return frame


def parse_vote_string(text) -> dict[str, float]:
    """``"12 positive: votes, 3 negative: votes"`` -> ``{"votes_positive": 12.0, ...}`` (0 for
    kinds absent); an item that does not parse is a DataError (the scraper's format changed)."""
    out = {f"votes_{k}": 0.0 for k in VOTE_KINDS}
    if text is None or (isinstance(text, float) and pd.isna(text)) or not str(text).strip():
        return out
    for item in str(text).split(","):
        m = _VOTE_ITEM.match(item.lower())
        if m is None:
            raise DataError(f"headline votes {text!r}: cannot read {item.strip()!r}; expected '<count> <kind>: votes'")
        kind = _VOTE_ALIASES.get(m.group(2), m.group(2))
        if f"votes_{kind}" in out:
            out[f"votes_{kind}"] += float(m.group(1))
    return out


def parse_fng_json(text: str) -> pd.DataFrame:
    """alternative.me's answer -> ``timestamp, value, classification`` (timestamp: the day, 00:00 UTC)."""
    try:
        doc = json.loads(text)
        rows = doc["data"]
        frame = pd.DataFrame({
            "timestamp": pd.to_datetime([int(r["timestamp"]) for r in rows], unit="s", utc=True).floor("D"),
            "value": [float(r["value"]) for r in rows],
            "classification": [str(r["value_classification"]) for r in rows]})
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"alternative.me answer not understood ({type(exc).__name__}: {exc}); "
                        f"expected {{'data': [{{'value', 'value_classification', 'timestamp'}}]}}") from None
    error = (doc.get("metadata") or {}).get("error")
    if error:
        raise DataError(f"alternative.me answered an error: {error}")
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def parse_cryptopanic_json(text: str) -> pd.DataFrame:
    """One page of CryptoPanic's ``/posts/`` -> ``timestamp, title, source`` + ``votes_<kind>``."""
    try:
        results = json.loads(text)["results"]
        rows = []
        for r in results:
            votes = r.get("votes") or {}
            source = r.get("source") or {}
            rows.append({"timestamp": pd.Timestamp(r["published_at"]).tz_convert("UTC"), "title": str(r["title"]),
                         "source": str(source.get("domain") or r.get("domain") or ""),
                         **{f"votes_{k}": float(votes.get(k, 0) or 0) for k in VOTE_KINDS}})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"CryptoPanic answer not understood ({type(exc).__name__}); expected "
                        f"{{'results': [{{'published_at', 'title', 'source', 'votes'}}]}}") from None
    columns = ["timestamp", "title", "source", *(f"votes_{k}" for k in VOTE_KINDS)]
    return pd.DataFrame(rows, columns=columns)


def fetch_fng(url: str = FNG_URL, timeout_s: float = 20.0) -> pd.DataFrame:
    """The whole daily history (``limit=0``)."""
    return parse_fng_json(_get(url, {"limit": 0, "format": "json"}, timeout_s))


def fetch_cryptopanic(url: str = CRYPTOPANIC_URL, pages: int = 5, timeout_s: float = 20.0) -> pd.DataFrame:
    """The newest ``pages`` pages of posts (CryptoPanic's free plan: recent posts only), stopping at
    the last page (``next`` null): CryptoPanic answers 404 for a page past it."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UserError(f"alt.series lists headlines from the API but {TOKEN_ENV} is not set; export your "
                        f"CryptoPanic token in it or collect headlines from a file (alt.source: parquet:DIR)")
    frames = []
    for page in range(1, pages + 1):
        text = _get(url, {"auth_token": token, "public": "true", "kind": "news", "page": page}, timeout_s)
        frames.append(parse_cryptopanic_json(text))
        if not json.loads(text).get("next"):
            break
    return pd.concat(frames, ignore_index=True)


def _get(url: str, query: dict, timeout_s: float) -> str:
    """GET ``url`` with ``query``; QTError naming the host and the status only (never the query:
    it may hold a token)."""
    import httpx

    host = httpx.URL(url).host
    try:
        answer = httpx.get(url, params=query, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise QTError(f"{host}: request failed ({type(exc).__name__}); check the network and retry") from None
    if answer.status_code != 200:
        raise QTError(f"{host}: HTTP {answer.status_code}; check the token/plan or retry later")
    return answer.text
