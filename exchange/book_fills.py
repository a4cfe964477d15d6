"""Market fills that walk a recorded book: ``qt exchange serve --book FILE_OR_DIR`` (issue 20).

Without ``--book`` a MARKET order fills at the current bar's close, no slippage
(``exchange.matching``). With it, a market order of a symbol the book covers is priced by the
resting depth the recording held at the exchange clock:

* **Which book**: the latest sample of ``levels.parquet`` (written by ``qt record-book --from-file``,
  ``data.orderbook.levels``; read here with pyarrow only, no replay logic) at or before ``now``, on
  Binance's event clock - the clock the candles, and so the exchange's clock, are stamped in. A
  sample older than ``MAX_AGE_MS`` (or none at all: the clock outside the recording, or a stretch
  where the replayed book was invalid) refuses the order with -2010 naming the book's time span -
  never a silent fall back to the bar close.
* **Which price**: the order's quantity walks the side it takes (asks for a buy, bids for a sell),
  best first (``qt.book_walk.walk_book``); its slippage is the walked average against the book's
  mid (so even a small order pays half the spread), and the fill is at ``bar.close x (1 +/- slippage)``.
  Why not the walked average itself: the exchange's one price series is its candles - ticker,
  marks, limit and stop matching, PnL all read them - and a recording's prices need not equal
  the candle close (another venue's candles, a synthetic data dir, a second between them); the
  book lends its *shape*, the candles keep the level, so a fill never jumps off the exchange's series.
* **A book thinner than the order** (the sampled levels run out): refused with -2010, not a
  partial fill. The table holds the top N levels only; the real book went on beyond them, so
  "liquidity ran out" would be an artefact of the sampling depth, and expiring the rest would
  misreport a market that could have filled it.
* Symbols the book does not cover, resting limit orders, and triggered stops keep the bar-close
  rules; a triggered STOP_MARKET fills at its trigger (the paper broker's gap rule), unchanged.
* **Chosen by** ``--book`` or, without it, by ``costs.fill_model: book`` + ``costs.book`` of
  ``--params FILE`` (``book_source``): the flag wins; ``fill_model: book`` without a path is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from exchange.ledger import Rejected
from exchange.orders import PERP, SPOT, Bar, Order
from qt.book_walk import slippage_bps_of, walk_book
from qt.config import CostParams
from qt.errors import ConfigError, DataError

MAX_AGE_MS = 5_000
LEVELS_FILE = "levels.parquet"
_KINDS = {"binance": SPOT, "binanceusdm": PERP}


def _iso(ms: int) -> str:
    return np.datetime64(int(ms), "ms").astype(str) + "Z"


@dataclass
class SymbolBook:
    """One symbol's samples: ``ts`` sorted, and per sample the bids and asks as (price, qty), best first."""

    ts: np.ndarray
    bids: list[list[tuple[float, float]]]
    asks: list[list[tuple[float, float]]]

    def at(self, now_ms: int, max_age_ms: int, symbol: str) -> int:
        i = int(np.searchsorted(self.ts, now_ms, side="right")) - 1
        if i < 0 or now_ms - int(self.ts[i]) > max_age_ms:
            raise Rejected(-2010, f"local exchange: no book of {symbol} within {max_age_ms // 1000} s before "
                                  f"{_iso(now_ms)}; the book covers {_iso(self.ts[0])}..{_iso(self.ts[-1])} "
                                  f"(move the clock into it, or serve without --book)")
        return i


class BookLevels:
    """The ``levels.parquet`` files under a path, by (market kind, exchange id)."""

    def __init__(self, books: dict[tuple[str, str], SymbolBook], max_age_ms: int = MAX_AGE_MS):
        self.books, self.max_age_ms = books, max_age_ms

    @classmethod
    def read(cls, path: Path, max_age_ms: int = MAX_AGE_MS, source: str = "--book") -> "BookLevels":
        """``source`` names where the path came from in every error (``--book`` or ``costs.book``)."""
        path = Path(path)
        files = [path] if path.is_file() else sorted(path.rglob(LEVELS_FILE)) if path.is_dir() else []
        if not files:
            raise DataError(f"{source} {path}: no {LEVELS_FILE} there (qt record-book --from-file writes it)")
        frames: dict[tuple[str, str], list] = {}
        for f in files:
            table = pq.read_table(f)
            meta = table.schema.metadata or {}
            market, symbol = meta.get(b"qt.market", b"").decode(), meta.get(b"qt.symbol", b"").decode()
            if market not in _KINDS or "/" not in symbol:
                raise DataError(f"{source} {f}: not a levels table (no qt.market/qt.symbol metadata)")
            key = (_KINDS[market], symbol.split(":")[0].replace("/", ""))
            frames.setdefault(key, []).append(table.select(["ts_ms", "side", "rank", "price", "qty"]).to_pandas())
        books = {key: _symbol_book(parts) for key, parts in frames.items()}
        empty = [f"{market} {symbol}" for (market, symbol), b in books.items() if not len(b.ts)]
        if empty:
            raise DataError(f"{source} {path}: no two-sided sample of {', '.join(empty)} (was the replayed book ever valid?)")
        return cls(books, max_age_ms)

    def covers(self, market: str, symbol: str) -> bool:
        return (market, symbol) in self.books

    def fill_price(self, order: Order, bar: Bar, now_ms: int) -> Decimal:
        """The market order's fill price: ``bar.close`` moved by the walked slippage vs the book's mid."""
        book = self.books[(order.market, order.symbol)]
        i = book.at(now_ms, self.max_age_ms, order.symbol)
        buying = order.side == "BUY"
        levels = book.asks[i] if buying else book.bids[i]
        qty = float(order.qty)
        avg, filled, _ = walk_book(levels, qty)
        if not filled or filled < qty * (1 - 1e-12):
            depth = sum(q for _, q in levels)
            raise Rejected(-2010, f"local exchange: {order.qty} {order.symbol} is more than the "
                                  f"{len(levels)} sampled {'ask' if buying else 'bid'} levels of the book at "
                                  f"{_iso(book.ts[i])} hold ({depth:g}); the book walk does not guess beyond them")
        mid = (book.bids[i][0][0] + book.asks[i][0][0]) / 2
        slip = slippage_bps_of(avg, mid, buying) / 1e4
        move = Decimal(repr(slip if buying else -slip))
        return (bar.close * (1 + move)).quantize(Decimal("1e-8"))


def book_source(flag: Path | None, costs: CostParams | None) -> tuple[Path, str] | None:
    """(path, its name for errors) of the book market orders walk: ``--book`` when given (it wins),
    else ``costs.book`` when ``costs.fill_model`` is book, else None (bar-close fills). ConfigError
    (one line) when ``fill_model: book`` names no book."""
    if flag is not None:
        return Path(flag), "--book"
    if costs is None or costs.fill_model != "book":
        return None
    if not costs.book:
        raise ConfigError("costs.fill_model: book needs costs.book: a levels.parquet (or a directory of them, from "
                          "qt record-book --from-file) for market orders to walk; set it, pass --book, or use "
                          "fill_model: fixed")
    return Path(costs.book), "costs.book"


def _symbol_book(parts: list) -> SymbolBook:
    import pandas as pd

    df = pd.concat(parts).drop_duplicates(["ts_ms", "side", "rank"]).sort_values(["ts_ms", "side", "rank"])
    ts = np.unique(df["ts_ms"].to_numpy())
    bids: list = [[] for _ in ts]
    asks: list = [[] for _ in ts]
    pos = np.searchsorted(ts, df["ts_ms"].to_numpy())
    for j, side, price, qty in zip(pos, df["side"].to_numpy(), df["price"].to_numpy(), df["qty"].to_numpy()):
        (bids if side > 0 else asks)[j].append((float(price), float(qty)))
    keep = [k for k in range(len(ts)) if bids[k] and asks[k]]  # a one-sided sample has no mid
    return SymbolBook(ts[keep], [bids[k] for k in keep], [asks[k] for k in keep])


__all__ = ["BookLevels", "MAX_AGE_MS", "SymbolBook", "book_source"]
