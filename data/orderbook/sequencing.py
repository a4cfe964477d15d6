"""Binance's rules for keeping a local book in step with its depth stream - pure decisions.

"How to manage a local order book correctly" (Binance API docs), with ``L`` the book's update id
(the snapshot's ``lastUpdateId``, then the last applied event's ``u``):

* **spot**: drop an event with ``u <= L``; the first event applied after a snapshot must have
  ``U <= L + 1 <= u``; after that each event's ``U`` must be the previous ``u + 1``.
* **USDT-M futures**: drop an event with ``u < L``; the first applied must have ``U <= L <= u``;
  after that each event's ``pu`` must equal the previous event's ``u`` (futures ids are not
  contiguous, so ``pu`` is the chain).

Anything else is a gap: the book misses updates and must be rebuilt from a new snapshot.
"""

from __future__ import annotations

from enum import Enum

from data.orderbook.messages import DepthDiff


class Verdict(str, Enum):
    APPLY = "apply"
    STALE = "stale"  # already contained in the book: drop
    GAP = "gap"  # updates are missing between the book and this event: resync


def spot_verdict(diff: DepthDiff, book_id: int, first_after_snapshot: bool) -> Verdict:
    if diff.last_id <= book_id:
        return Verdict.STALE
    if first_after_snapshot:
        return Verdict.APPLY if diff.first_id <= book_id + 1 <= diff.last_id else Verdict.GAP
    return Verdict.APPLY if diff.first_id == book_id + 1 else Verdict.GAP


def futures_verdict(diff: DepthDiff, book_id: int, first_after_snapshot: bool) -> Verdict:
    if diff.last_id < book_id:
        return Verdict.STALE
    if first_after_snapshot:
        return Verdict.APPLY if diff.first_id <= book_id <= diff.last_id else Verdict.GAP
    return Verdict.APPLY if diff.prev_id == book_id else Verdict.GAP



def rules_for(market: str):
    """``binance`` (spot) or ``binanceusdm`` (USDT-M) -> its verdict function."""
    return futures_verdict if market == "binanceusdm" else spot_verdict
