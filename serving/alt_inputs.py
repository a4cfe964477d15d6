"""The alt series the service joins onto a request's bars: read from the lake's ``alt/`` exactly as
``features.materialise.read_alt_inputs`` reads them, kept in memory and re-read only when a
partition file changes (the collector rewrites a yearly file when a new day arrives).

Why a cache: the series are small (a few thousand daily rows, a few thousand headlines) but
reading ~20 Parquet files per request would cost more than computing the features. The key of
a cached value is every partition's (size, mtime), the lake's own change signal, so a served row
is computed from the same rows the store and the backtest see.
"""

from __future__ import annotations

import threading
from pathlib import Path

from data.alt_lake import alt_dir
from features.alt_features import alt_series_needed
from features.alt_join import AltInputs
from features.book_lake import book_root
from qt.config import FeatureParams
from qt.errors import DataError
from serving.inference import RequestRejected


class AltCache:
    """``select(params)`` -> the ``AltInputs`` a model's alt families need (None when it uses none)."""

    def __init__(self, lake: Path):
        self.lake = Path(lake)
        self._lock = threading.Lock()
        self._cached: dict[tuple[str, ...], tuple[tuple, AltInputs]] = {}

    def generation(self, params: FeatureParams) -> tuple:
        """The partitions' (name, size, mtime) of the series ``params`` reads: a row cache key."""
        out = []
        for name in alt_series_needed(params):
            for path in sorted(alt_dir(self.lake, name).glob("*.parquet")):
                st = path.stat()
                out.append((name, path.name, st.st_size, st.st_mtime_ns))
        if params.book:  # every recording's levels and trades (a recorder appends days)
            for path in sorted((book_root(self.lake, params) / "orderbook").glob("*/*/*/*.parquet")):
                st = path.stat()
                out.append(("book", str(path), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def select(self, params: FeatureParams) -> AltInputs | None:
        """The alt inputs of ``params``; 422 naming what to collect when the lake lacks one."""
        from features.materialise import read_alt_inputs

        needed = tuple(alt_series_needed(params)) + ((f"book:{params.book_lake}:{params.book_levels}:{params.book_flow_seconds}",)
                                                     if params.book else ())
        if not needed:
            return None
        key = self.generation(params)
        with self._lock:
            hit = self._cached.get(needed)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            alt = read_alt_inputs(self.lake, params)
        except DataError as exc:
            raise RequestRejected(422, f"the model's alt features cannot be computed: {exc}") from None
        with self._lock:
            self._cached[needed] = (key, alt)
        return alt
