"""Which bars of a challenger's holdout the champion may be scored on (pure).

The champion is re-scored on the challenger's holdout to compare the two on the same bars. A
champion trained on older data may have been *fitted* on part of that holdout (a retrain on a
longer history moves the holdout cut back past the champion's training end): scored there it
would be graded on data it learned, and look better than it is. So it is scored only on the
holdout bars it never saw:

* its last training row's features end at ``train_end``; that row's label reads
  ``label_reach_bars`` bars further (``features.labels.label_reach_bars``: the horizon for a
  forward-return label, ``max_holding_bars + 1`` for a triple-barrier one; ``horizon_bars`` for a
  champion logged before it recorded its reach), and the purge kept a further ``embargo_bars``
  gap, so the first clean bar is ``train_end + (reach + embargo_bars + 1)`` bars;
* its own holdout start, when later: labels count a symbol's own rows, so across a gap a
  label ends later than its bar count says, but the purge guarantees that every training
  label and its embargo end before the champion's holdout began.

The challenger is compared on the same bars (``training.gates``). When fewer than
``min_bars`` remain, or the champion logged no training end, the comparison is refused: the
challenger then cannot be shown to beat the champion, and a refused comparison fails the
``champion_comparison`` gate - no automatic promotion; a person may still approve it
(``qt models approve VERSION --by NAME --force``, recorded).
"""

from __future__ import annotations

import pandas as pd


def champion_scoring_window(holdout_bars, champion_metadata: dict, bar_ms: int, embargo_bars_default: int,
                            min_bars: int) -> dict:
    """``{status, scored_from, champion_train_end, bars_total, bars_used, bars_dropped, why}``.

    ``holdout_bars``: the challenger's holdout timestamps (any order, repeats allowed: one per
    symbol); ``champion_metadata``: what the champion logged (``train_end``, ``label_reach_bars``
    or ``horizon_bars``, ``embargo_bars``, ``holdout_start``); ``embargo_bars_default`` stands in for a champion logged
    before it recorded its embargo. ``status`` is ``compared`` or ``refused``; ``scored_from`` is
    the first bar the champion may be scored on (ISO; None when refused for an unknown end).
    """
    bars = pd.DatetimeIndex(pd.to_datetime(pd.Series(holdout_bars), utc=True).unique()).sort_values()
    out = {"status": "refused", "scored_from": None, "champion_train_end": champion_metadata.get("train_end"),
           "bars_total": int(len(bars)), "bars_used": 0, "bars_dropped": int(len(bars)), "min_bars": int(min_bars)}
    if not champion_metadata.get("train_end"):
        out["why"] = ("the champion logged no training end, so the holdout bars it was fitted on cannot be "
                      "told apart; comparison refused")
        return out
    horizon = int(champion_metadata.get("label_reach_bars") or champion_metadata.get("horizon_bars") or 0)
    embargo = champion_metadata.get("embargo_bars")
    embargo = int(embargo_bars_default if embargo is None else embargo)
    first_clean = _utc(champion_metadata["train_end"]) + pd.Timedelta(milliseconds=bar_ms * (horizon + embargo + 1))
    rule = f"its training end {champion_metadata['train_end']} + {horizon}-bar label reach + {embargo}-bar embargo"
    if champion_metadata.get("holdout_start") and _utc(champion_metadata["holdout_start"]) > first_clean:
        first_clean = _utc(champion_metadata["holdout_start"])
        rule = f"its own holdout start {champion_metadata['holdout_start']} (labels across a gap end later)"
    used = int((bars >= first_clean).sum())
    out.update(scored_from=first_clean.isoformat(), bars_used=used, bars_dropped=int(len(bars) - used))
    dropped = (f"{out['bars_dropped']} of {len(bars)} holdout bars dropped: the champion may have been fitted "
               f"on bars before {first_clean.isoformat()} ({rule})" if out["bars_dropped"]
               else f"no holdout bar dropped: all lie after {rule}")
    if used < min_bars:
        out["why"] = (f"{dropped}; only {used} bars left, fewer than gates.min_champion_bars={min_bars}; "
                      f"comparison refused")
        return out
    out.update(status="compared", why=f"{dropped}; champion and challenger compared on the {used} bars after")
    return out


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
