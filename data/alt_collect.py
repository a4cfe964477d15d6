"""``qt collect``'s alt part: the series listed in ``alt.series`` into ``<lake>/alt/``.

Off by default (``alt.series: []``), so a plain ``make run`` collects exactly what it did before.
The source follows ``alt.source`` (see ``qt.config.AltParams``): a directory laid out like
``../shared/data`` (``parquet:DIR``, and what ``data`` means for a ``parquet:`` data source) or
the public APIs (``api``, and ``data`` for the ``ccxt`` source). Incremental: the lake keeps every
row it has, each re-run adds only rows it did not hold (``data.alt_lake.write_alt``).
"""

from __future__ import annotations

import time
from pathlib import Path

from data.alt_lake import with_availability, write_alt
from data.alt_sources import FileOnchainSource, OnchainSource, fetch_cryptopanic, fetch_fng, read_file_series
from qt.config import Params
from qt.errors import DataError


def alt_source_of(params: Params) -> str:
    """``parquet:DIR`` or ``api``: ``alt.source`` with ``data`` resolved against ``data.source``."""
    source = params.alt.source
    if source == "data":
        data = params.data.source
        if data.startswith("parquet:"):
            return data
        if data == "ccxt":
            return "api"
        raise DataError(f"alt.series {params.alt.series} cannot follow data.source {data}: the synthetic market "
                        f"has no alternative data; set alt.source: parquet:DIR (e.g. ../shared/data) or api")
    if source == "api" or source.startswith("parquet:"):
        return source
    raise DataError(f"alt.source {source!r}: expected data, api or parquet:DIR")


def collect_alt(params: Params, root: Path, onchain: OnchainSource | None = None, fetchers: dict | None = None) -> dict:
    """Store each series of ``alt.series`` under ``root/alt``; ``{series: {rows, rows_added,
    partitions_written, first, last}}`` plus the source and seconds. ``onchain``: the on-chain
    adapter (default: the file adapter of a ``parquet:`` source; the API source has none, so
    on-chain from ``api`` needs one passed). ``fetchers``: name -> () -> frame, for tests."""
    t0 = time.perf_counter()
    source = alt_source_of(params)
    out: dict = {"source": source, "series": {}}
    for name in params.alt.series:
        raw = _fetch(name, source, params, onchain, fetchers or {})
        stored = with_availability(raw, name)
        result = write_alt(root, name, stored)
        out["series"][name] = {
            "rows": int(len(stored)), "rows_added": int(result.rows_added),
            "partitions_written": result.partitions_written,
            "first": stored["timestamp"].min().isoformat() if len(stored) else None,
            "last": stored["timestamp"].max().isoformat() if len(stored) else None}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _fetch(name: str, source: str, params: Params, onchain: OnchainSource | None, fetchers: dict):
    if name in fetchers:
        return fetchers[name]()
    if source.startswith("parquet:"):
        directory = Path(source.partition(":")[2])
        return (onchain or FileOnchainSource(directory)).fetch() if name == "onchain_btc" \
            else read_file_series(directory, name)
    if name == "fear_greed":
        return fetch_fng(params.alt.fng_url)
    if name == "headlines":
        return fetch_cryptopanic(params.alt.cryptopanic_url, params.alt.cryptopanic_pages)
    if onchain is None:
        raise DataError("alt.series lists onchain_btc with the API source, but no public on-chain API is wired in: "
                        "collect it from a file (alt.source: parquet:DIR) or pass an OnchainSource adapter")
    return onchain.fetch()
