"""Materialise features and labels from the raw lake into the feature store, incrementally.

``materialise`` reads each symbol's candles (``qt.lake.read_candles``), computes features
(``features.compute.compute_features``, the one implementation serving also uses) and labels
(``features.labels.make_labels``, triple-barrier ones when ``labels.triple_barrier``) and
writes them as period partitions (``features.store`` layout), one symbol per worker.

Anchored partitions (why incremental equals full, bit for bit): the features of period P are
``compute_features`` on the candles of P preceded by the ``warmup_bars(params)`` bars before
P's first bar (all earlier bars when fewer exist). A partition's values therefore depend only
on its own candles and that fixed prefix, never on where an earlier run started, so
recomputing the last partition after an append gives exactly the bytes a fresh run gives.
They agree with one ``compute_features`` over the whole history within the warm-up's
declared tolerance (``features.pit.check_recursive``: after the warm-up a recursive
indicator no longer depends on where history starts); the first partition, which starts
with the history, agrees exactly. Labels look forward only, so they are exact everywhere.

Incremental rule, per symbol: the manifest records the feature-set and label-set hashes, the
timeframe, a fingerprint (size, mtime) of every raw candle partition and a digest of every
stored partition. A raw partition that is new, changed or gone at period R means: features
are recomputed for R and later periods (reading the warm-up bars before R), labels for the
period before R and later (its last bars were waiting for R's bars), and a partition is
rewritten only when its content differs, so untouched periods keep their bytes and mtime.
A different hash or timeframe, or a missing manifest, recomputes the symbol in full. The
manifest is written last: a run killed before it is simply redone by the next run.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from features import store
from features.compute import compute_features, feature_set_hash, warmup_bars
from features.labels import label_set_hash, make_labels
from features.multi_input import uses_funding, uses_reference
from qt.config import Params
from qt.errors import ConfigError, DataError
from qt.lake import (candle_path, monthly_partitions, partition_bounds, read_candles, remove_orphan_temp_files,
                     stored_timestamps_ms)


def materialise(candles_root: Path, symbols: list[str], timeframe: str, params: Params, out_root: Path,
                workers: int = 2) -> dict:
    """Bring the store under ``out_root`` up to date with the lake for ``symbols``.

    Returns ``{rows, label_rows, rows_computed, files, seconds, feature_set_hash,
    label_set_hash, symbols}``: stored feature/label rows after the run, feature rows computed
    now, the files (re)written now (paths relative to ``out_root``), and per-symbol detail.
    Symbols stored under ``out_root`` but absent from ``symbols`` are removed (a store never
    mixes a shrunk universe with stale symbols). Raises the first symbol's error after every
    other symbol has finished (DataError for absent candles), with the others noted.
    """
    t0 = time.perf_counter()
    out_root = Path(out_root)
    if not symbols:
        raise DataError("no symbols to materialise; pass at least one (check --symbols / data.symbols)")
    job = _Job(Path(candles_root), timeframe, params, out_root)
    results: dict[str, dict] = {}
    failures: list[tuple[str, BaseException]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="materialise") as pool:
        futures = {sym: pool.submit(job.run, sym) for sym in dict.fromkeys(symbols)}
        for sym, fut in futures.items():
            try:
                results[sym] = fut.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the other symbols finished
                failures.append((sym, exc))
    if failures:
        first = failures[0][1]
        if len(failures) > 1:
            first.add_note("also failed: " + "; ".join(f"{s}: {e}" for s, e in failures[1:]))
        raise first
    _remove_other_symbols(out_root, set(symbols))
    return {"rows": sum(r["rows"] for r in results.values()),
            "label_rows": sum(r["label_rows"] for r in results.values()),
            "rows_computed": sum(r["rows_computed"] for r in results.values()),
            "files": sorted(f for r in results.values() for f in r["files"]),
            "seconds": round(time.perf_counter() - t0, 3),
            "feature_set_hash": job.feature_hash, "label_set_hash": job.label_hash, "symbols": results}


def read_training_frame(out_root: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Features joined with labels on (symbol, timestamp): only rows having both, sorted.

    Column order: symbol, timestamp, the feature columns, the label columns.
    """
    feats = store.read_features(out_root, symbols)
    labels = store.read_labels(out_root, symbols)
    return feats.merge(labels, on=store.KEYS, how="inner", sort=False, validate="one_to_one")


class _Job:
    """One materialisation run's constant inputs; ``run(symbol)`` is the per-symbol unit of work."""

    def __init__(self, candles_root: Path, timeframe: str, params: Params, out_root: Path):
        if uses_funding(params.features) or uses_reference(params.features):
            raise ConfigError("features.funding_last/funding_mean/basis/cross need funding or reference candles, "
                              "which materialise does not read yet; switch them off to materialise")
        self.candles_root, self.timeframe, self.params, self.out_root = candles_root, timeframe, params, out_root
        self.monthly = monthly_partitions(timeframe)
        self.warmup = warmup_bars(params.features)
        self.risk = params.risk if params.labels.triple_barrier else None
        self.feature_hash = feature_set_hash(params.features)
        self.label_hash = label_set_hash(params.labels, params.costs, self.risk)

    def run(self, symbol: str) -> dict:
        directory = store.symbol_dir(self.out_root, symbol)
        raw = _raw_fingerprints(candle_path(self.candles_root, symbol, self.timeframe))
        config = {"symbol": symbol, "timeframe": self.timeframe,
                  "feature_set_hash": self.feature_hash, "label_set_hash": self.label_hash}
        remove_orphan_temp_files(directory)
        old = store.read_manifest(directory)
        if old is not None and (old.get("config") != config or not _files_present(directory, old)):
            old = None
        keys = sorted(raw)
        if old is None:
            first = keys[0] if keys else ""
        else:
            changed = [k for k in keys if old["raw"].get(k) != raw[k]] + [k for k in old["raw"] if k not in raw]
            if not changed:
                return _summary(old, rows_computed=0, files=[])
            first = min(changed)
        before = [k for k in keys if k < first]
        label_first = before[-1] if (before and old is not None) else first
        candles = read_candles(self.candles_root, [symbol], self.timeframe,
                               start=None if old is None else self._read_start(symbol, first, label_first))
        feats = self._features(candles, first)
        lab_candles = candles[candles["timestamp"] >= partition_bounds(label_first)[0]] if old is not None else candles
        labels = make_labels(lab_candles, self.params.labels, self.params.costs, self.risk)

        manifest = {"config": config, "raw": raw, "features": {}, "labels": {}}
        written: list[str] = []
        for kind, frame, since in (("features", feats, first), ("labels", labels, label_first)):
            kept = {k: v for k, v in (old or {}).get(kind, {}).items() if k < since}
            manifest[kind] = kept | self._write_parts(directory, kind, frame, since, (old or {}).get(kind, {}),
                                                      written)
        store.write_manifest(directory, manifest)
        return _summary(manifest, rows_computed=len(feats), files=written)

    def _read_start(self, symbol: str, first: str, label_first: str) -> pd.Timestamp | None:
        """Open time of the first candle needed: the warm-up bars before ``first`` and the whole
        ``label_first`` period; None (from the start) when fewer warm-up bars exist."""
        first_start = partition_bounds(first)[0]
        end_ms = int(first_start.value // 1_000_000)
        label_ms = int(partition_bounds(label_first)[0].value // 1_000_000)
        # the period before usually holds the whole warm-up: read its timestamps only, else all
        before_ms = stored_timestamps_ms(self.candles_root, symbol, self.timeframe, start_ms=label_ms, end_ms=end_ms)
        if len(before_ms) < self.warmup:
            before_ms = stored_timestamps_ms(self.candles_root, symbol, self.timeframe, end_ms=end_ms)
        if len(before_ms) < self.warmup:
            return None
        warm_start = pd.Timestamp(int(before_ms[-self.warmup]), unit="ms", tz="UTC")
        return min(warm_start, partition_bounds(label_first)[0])

    def _features(self, candles: pd.DataFrame, first: str) -> pd.DataFrame:
        """Anchored features of every period from ``first`` on (see the module docstring)."""
        parts = []
        for key, lo, hi in store.partition_slices(candles["timestamp"], self.monthly):
            if key < first:
                continue
            window = candles.iloc[max(0, lo - self.warmup):hi]
            computed = compute_features(window, self.params.features)
            parts.append(computed[computed["timestamp"] >= candles["timestamp"].iat[lo]])
        if not parts:
            return compute_features(candles.iloc[:0], self.params.features)
        return pd.concat(parts, ignore_index=True)

    def _write_parts(self, directory: Path, kind: str, frame: pd.DataFrame, since: str, old_entries: dict,
                     written: list[str]) -> dict:
        """Write the ``kind`` partitions of periods >= ``since`` whose content changed; delete
        stored ones of those periods that have no rows now. Returns their manifest entries."""
        entries = {}
        parts = store.FrameParts(frame, self.monthly)
        for key, lo, hi in parts.slices:
            entries[key] = parts.entry(lo, hi)
            path = store.partition_path(directory, key, kind)
            if old_entries.get(key, {}).get("sha256") == entries[key]["sha256"] and path.is_file():
                continue
            parts.write(lo, hi, path)
            written.append(str(path.relative_to(self.out_root)))
        for key, path in store.stored_partitions(directory, kind).items():
            if key >= since and key not in entries:
                path.unlink()
        return entries


def _raw_fingerprints(directory: Path) -> dict[str, list[int]]:
    """``{period: [size, mtime_ns]}`` of each raw candle partition: the lake rewrites a partition
    only when its rows change (and always by rename), so an equal fingerprint means equal candles."""
    out = {}
    for path in sorted(directory.glob("*.parquet")):
        st = path.stat()
        out[path.name[: -len(".parquet")]] = [st.st_size, st.st_mtime_ns]
    return out


def _files_present(directory: Path, manifest: dict) -> bool:
    """Every partition the manifest lists is on disk (someone may have deleted files by hand)."""
    return all(store.partition_path(directory, key, kind).is_file()
               for kind in store.KINDS for key in manifest.get(kind, {}))


def _summary(manifest: dict, rows_computed: int, files: list[str]) -> dict:
    return {"rows": sum(e["rows"] for e in manifest["features"].values()),
            "label_rows": sum(e["rows"] for e in manifest["labels"].values()),
            "rows_computed": int(rows_computed), "files": files,
            "partitions": sorted(manifest["features"])}


def _remove_other_symbols(out_root: Path, keep: set[str]) -> None:
    """Delete symbol directories (and files of the old flat layout) not in ``keep``."""
    wanted = {store.symbol_dir(out_root, s) for s in keep}
    for market in ("binance", "binanceusdm"):
        base = out_root / market
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if entry.is_dir() and entry not in wanted:
                shutil.rmtree(entry)
            elif entry.is_file() and entry.suffix == ".parquet":
                os.unlink(entry)
