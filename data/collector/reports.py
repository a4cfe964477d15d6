"""What a collection run tells its caller and its user: the per-symbol and run reports, and progress.

Why a module of its own: the reports are the collector's return values (the CLI prints them as
JSON, the pipeline's collect stage summarises them, the Prefect flow ships them between
workers), and the progress sinks are presentation (one line per N pages off a TTY, rich bars
on one); neither is part of fetching or storing candles.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd


@dataclass
class SymbolReport:
    """What one symbol's collection did; ``error`` is None when it completed."""

    symbol: str
    timeframe: str
    rows_added: int = 0
    pages: int = 0
    retries: int = 0
    first_stored: str | None = None
    last_stored: str | None = None
    gaps_filled: int = 0  # gap ranges completely filled by re-requesting them this run
    gaps_unfillable: int = 0  # gap ranges the exchange cannot fill (known, not re-requested)
    gap_requests: int = 0  # gap ranges re-requested this run
    funding_rows_added: int = 0
    open_interest_rows_added: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CollectReport:
    timeframe: str
    symbols: list[SymbolReport]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.symbols)

    @property
    def failed(self) -> list[SymbolReport]:
        return [s for s in self.symbols if not s.ok]

    def to_dict(self) -> dict:
        return {"timeframe": self.timeframe, "ok": self.ok, "seconds": round(self.seconds, 3),
                "rows_added": sum(s.rows_added for s in self.symbols),
                "failed": [s.symbol for s in self.failed],
                "symbols": [asdict(s) for s in self.symbols]}


@dataclass(frozen=True)
class PageProgress:
    """Sent to the progress sink after each stored page."""

    symbol: str
    pages: int
    rows_added: int
    last_ts_ms: int
    expected_rows: int  # closed candles in the planned ranges (an upper bound: gaps)


ProgressFn = Callable[[PageProgress], None]


class LineProgress:
    """Not a TTY: one line per ``every`` pages of a symbol and one when it finishes."""

    def __init__(self, every: int, stream=None):
        self.every = every
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def page(self, p: PageProgress) -> None:
        if p.pages % self.every:
            return
        when = pd.Timestamp(p.last_ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
        self._line(f"collect {p.symbol}: {p.pages} pages, +{p.rows_added} candles (of <= {p.expected_rows}), "
                   f"up to {when}")

    def done(self, r: SymbolReport) -> None:
        if r.ok:
            self._line(f"collect {r.symbol}: done, +{r.rows_added} candles in {r.pages} pages, {r.retries} retries, "
                       f"stored {r.first_stored} .. {r.last_stored}, gaps filled {r.gaps_filled}, "
                       f"unfillable {r.gaps_unfillable}")
        else:
            self._line(f"collect {r.symbol}: FAILED: {r.error}")

    def _line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A TTY: one rich progress bar per symbol (total = closed candles planned)."""

    def __init__(self, symbols: list[str]):
        # imported here: rich is only needed on a terminal (a heavy optional import)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), transient=False)
        self._tasks = {s: self._progress.add_task(s, total=None) for s in symbols}
        self._progress.start()

    def page(self, p: PageProgress) -> None:
        self._progress.update(self._tasks[p.symbol], completed=p.rows_added, total=max(p.expected_rows, p.rows_added))

    def done(self, r: SymbolReport) -> None:
        label = f"{r.symbol} ok" if r.ok else f"{r.symbol} FAILED: {r.error}"
        self._progress.update(self._tasks[r.symbol], description=label, completed=r.rows_added,
                              total=max(r.rows_added, 1))

    def close(self) -> None:
        self._progress.stop()


def make_progress(symbols: list[str], every: int):
    """Rich bars on a terminal, else progress lines on stderr."""
    return RichProgress(symbols) if sys.stdout.isatty() else LineProgress(every)
