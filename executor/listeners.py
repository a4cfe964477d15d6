"""Which loop listeners may fail quietly, and what a failure does: the loop's listener health.

Why: the loop must keep managing exits whatever a listener does, but a failure must never be
silent. Two classes of listener:

* **critical** (``critical = True`` on the listener class: the SQLite ``StateStore``, the journal
  a restart and the dashboard depend on): its first failure puts the loop in a *state-write
  failure*: no new entries (each is denied with ``STATE_WRITE_FAILED``), exits, protective orders
  and marks go on, and one ``STATE_WRITE_FAILED`` alert is raised. The failure **clears by
  itself** once the recorder has written one whole bar again without raising (its commit at the
  end of the bar included): entries resume from the next bar and a ``STATE_WRITE_RECOVERED``
  alert names the outage. What was not written during the outage stays missing from the
  journal; a restart reconciles with the exchange, not with those rows.
* everything else (metrics, notifier, Redis events): each failure is counted
  (``qt_executor_listener_failures_total{listener}``) and logged once per outage of a
  (listener, hook): the first failure logs with its traceback, repeats do not, the first success
  of that hook afterwards logs a recovery line.

``ListenerHealth`` holds this bookkeeping (no I/O apart from log lines); ``TradingLoop._emit``
reports each call's outcome to it.
"""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger("executor.loop")

STATE_WRITE_FAILED = "STATE_WRITE_FAILED"
STATE_WRITE_RECOVERED = "STATE_WRITE_RECOVERED"


def is_critical(listener: object) -> bool:
    return bool(getattr(listener, "critical", False))


def listener_name(listener: object) -> str:
    return type(listener).__name__


class ListenerHealth:
    def __init__(self):
        self._down: set[tuple[str, str]] = set()  # (listener, hook) in an outage
        self.state_write_failed_since: pd.Timestamp | None = None  # bar of the recorder's first failure
        self._state_failed_this_bar = False

    @property
    def entries_blocked(self) -> bool:
        return self.state_write_failed_since is not None

    def failed(self, listener: object, hook: str, ts: pd.Timestamp | None) -> bool:
        """Record a failure; True when it starts a state-write failure (the caller alerts)."""
        key = (listener_name(listener), hook)
        if key not in self._down:
            self._down.add(key)
            log.error("listener %s.%s failed (logged once until it works again)%s", key[0], hook,
                      "; no new entries until the state is written again" if is_critical(listener)
                      else "; trading continues", exc_info=True)
        if not is_critical(listener):
            return False
        self._state_failed_this_bar = True
        if self.state_write_failed_since is None:
            self.state_write_failed_since = ts
            return True
        return False

    def succeeded(self, listener: object, hook: str) -> None:
        key = (listener_name(listener), hook)
        if key in self._down:
            self._down.discard(key)
            log.warning("listener %s.%s recovered", *key)

    def end_bar(self) -> pd.Timestamp | None:
        """At the end of a bar: the start of the state-write failure it ends, if the recorder wrote it whole."""
        since, clean = self.state_write_failed_since, not self._state_failed_this_bar
        self._state_failed_this_bar = False
        if since is not None and clean:
            self.state_write_failed_since = None
            return since
        return None
