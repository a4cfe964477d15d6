"""The order-book family's input read from disk: every recording's levels and trades, sampled.

Where: ``features.book_lake`` (the ``--lake DIR`` given to ``qt record-book --from-file``), or the
candles lake itself when it is null; recordings sit at ``orderbook/<market>/<STEM>/<UTC day>/``
(``data.orderbook.store``) with the ``levels.parquet`` the import writes beside them. A day
without ``levels.parquet`` (REST snapshot polls) adds nothing. Read whole, once per run, like the
alt series; ``book_fingerprints`` lets materialisation recompute only the periods a changed
recording can reach.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from data.orderbook.levels import LEVELS_FILE
from data.orderbook.store import recording_root
from features.book_bars import SAMPLE_COLUMNS, book_samples
from qt.config import FeatureParams
from qt.errors import DataError

_TRADE_COLUMNS = ["trade_ms", "qty", "is_buyer_maker"]


def book_root(candles_root: Path, params: FeatureParams) -> Path:
    return Path(params.book_lake) if params.book_lake else Path(candles_root)


def read_book_samples(root: Path, params: FeatureParams) -> pd.DataFrame:
    """``features.book_bars.SAMPLE_COLUMNS`` of every recorded symbol, sorted by symbol and time;
    DataError naming how to record one when ``root`` holds none."""
    files = sorted((Path(root) / "orderbook").glob(f"*/*/*/{LEVELS_FILE}"))
    if not files:
        raise DataError(f"the book features need an order-book recording with {LEVELS_FILE} under "
                        f"{Path(root) / 'orderbook'}; import one with `qt record-book --from-file RAW --lake {root}` "
                        f"(or point features.book_lake at one), or switch features.book off")
    by_symbol: dict[str, list[Path]] = {}
    for path in files:
        meta = pq.read_schema(path).metadata or {}
        by_symbol.setdefault(meta.get(b"qt.symbol", b"").decode() or _symbol_of(path), []).append(path)
    frames = []
    for symbol, paths in sorted(by_symbol.items()):
        levels = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
        parts = [pd.read_parquet(p.parent / "trades.parquet", columns=_TRADE_COLUMNS)
                 for p in paths if (p.parent / "trades.parquet").is_file()]
        trades = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=_TRADE_COLUMNS)
        frames.append(book_samples(symbol, levels, trades, params.book_levels, params.book_flow_seconds * 1000))
    return pd.concat(frames, ignore_index=True)[SAMPLE_COLUMNS]


def book_fingerprints(root: Path, symbol: str) -> dict[str, list[int]]:
    """``{YYYY-MM: [bytes, newest mtime_ns]}`` of ``symbol``'s recorded levels and trades, per month."""
    base = recording_root(root, symbol, "binanceusdm" if ":" in symbol else "binance")
    out: dict[str, list[int]] = {}
    for path in sorted(base.glob(f"*/{LEVELS_FILE}")) + sorted(base.glob("*/trades.parquet")):
        st, month = path.stat(), path.parent.name[:7]
        size, mtime = out.get(month, [0, 0])
        out[month] = [size + st.st_size, max(mtime, st.st_mtime_ns)]
    return out


def _symbol_of(levels_path: Path) -> str:
    from data.partitions import symbol_from

    return symbol_from(levels_path.parents[2].name, levels_path.parents[1].name)
