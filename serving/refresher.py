"""A daemon thread calling one function every few seconds: the service's background candle refresh
and its champion watcher (``serving.champion.ChampionWatcher`` polls the registry with it).

The collector rewrites every symbol's candle file once per bar; the first ``/signals`` batch after
that would re-read them all (~2.4 ms each, ~1.4 s for 566 symbols) before computing anything.
``SignalEngine.refresh_candles`` re-reads the changed files of the universe last asked for, and
this thread runs it every ``serving.lake_refresh_seconds`` while the collector writes, so the
batch finds them read. Errors are logged and the loop goes on: a refresh is an optimisation,
the request path reads what it needs itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("qt.serving")


class Refresher:
    """Calls ``work()`` every ``interval_s`` seconds on a daemon thread until ``stop()``."""

    def __init__(self, work: Callable[[], object], interval_s: float, name: str = "lake-refresher"):
        self._work = work
        self._interval_s = float(interval_s)
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Refresher:
        if self._interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._work()
            except Exception:  # noqa: BLE001 - log it and keep refreshing; requests read for themselves
                log.exception("%s: refresh failed", self._name)
