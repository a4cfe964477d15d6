"""Materialise features and labels from the raw lake into the feature store, incrementally.

``materialise`` reads each symbol's candles (the rows ``data.lake.read_candles`` gives), computes
features (``features.compute``, the one implementation serving also uses) and labels
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

Multi-input families (``features.multi_input``: funding, basis, cross-asset): the symbol's
funding history and the reference candles it needs (``required_inputs``) are read from the
same lake, whole (each once per run), and passed to the same ``compute_features``; a missing
input is a DataError naming what to collect or which family to switch off. Their partitions
are fingerprinted like the symbol's own: a changed input partition starting at R recomputes
the features from the period holding the bar before R (that bar's close may see R's data).
The cross-venue family (``features.cross_venue``) reads Bybit's candles and funding of the
perpetual from ``bybit_root`` (``data.sources.venue_lake_root(params, paths, "bybit")``: the
same root for file and local-exchange sources), fingerprinted the same way.
The alt families (``features.alt_features``) read the lake's market-wide ``alt/`` series
(``read_alt_inputs``: every stored row, once per run), fingerprinted per yearly partition like
the other inputs, so a day of new Fear & Greed or on-chain values recomputes the periods that
can see it. The book family (``features.book_bars``) reads every recording once per run
(``features.book_lake``), fingerprinted per symbol and month of recording.

Incremental rule, per symbol: the manifest records the feature-set and label-set hashes, the
timeframe, a fingerprint (size, mtime) of every raw candle partition (and of every input
partition) and a digest of every stored partition. A raw partition that is new, changed or
gone at period R means: features are recomputed for R and later periods (reading the warm-up
bars before R), labels for the
period before R and later (its last bars were waiting for R's bars), and a partition is
rewritten only when its content differs, so untouched periods keep their bytes and mtime.
A different hash or timeframe, or a missing manifest, recomputes the symbol in full. The
manifest is written last: a run killed before it is simply redone by the next run.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa

from data.alt_lake import alt_dir, read_alt
from data.lake import (OHLCV_COLUMNS, candle_path, funding_dir, monthly_partitions, partition_bounds, partition_key,
                       read_candles, read_funding, remove_orphan_temp_files, stored_timestamps_ms)
from data.partitions import read_table
from features import store
from features.alt_features import alt_series_needed
from features.alt_join import AltInputs
from features.book_lake import book_fingerprints, book_root, read_book_samples
from features.compute import compute_features_windows, feature_set_hash, warmup_bars
from features.cross_venue import COLLECT_HINT, OtherVenue, no_other_venue
from features.input_frames import no_funding, no_reference
from features.labels import label_set_hash, make_labels
from features.multi_input import (needs_other_venue, reference_window, required_inputs, uses_funding,
                                  uses_other_venue, uses_reference)
from qt.config import FeatureParams, Params
from qt.errors import DataError
from qt.fanout import in_threads


def materialise_symbol(symbol: str, *, candles_root: str, timeframe: str, params: Params, out_root: str,
                       bybit_root: str | None = None) -> dict:
    """Bring one symbol's partitions up to date: the unit of work ``materialise`` fans out (a
    Prefect task per symbol in the flows, on threads or a Dask worker). It reads its own candles
    and inputs from the lake and writes only under its own symbol directory, so symbols never
    touch each other's files and the result does not depend on where or in which order they run."""
    return _Job(Path(candles_root), timeframe, params, Path(out_root),
                None if bybit_root is None else Path(bybit_root)).run(symbol)


def materialise(candles_root: Path, symbols: list[str], timeframe: str, params: Params, out_root: Path,
                workers: int = 2, map_symbols=None, bybit_root: Path | None = None) -> dict:
    """Bring the store under ``out_root`` up to date with the lake for ``symbols``.

    Returns ``{rows, label_rows, rows_computed, files, seconds, phase_seconds, feature_set_hash,
    label_set_hash, symbols}``: stored feature/label rows after the run, feature rows computed
    now, the files (re)written now (paths relative to ``out_root``), the seconds each phase took
    summed over symbols (``read``, ``features``, ``labels``, ``write_features``,
    ``write_labels``: thread time, so with 2 workers they add up to about twice the wall
    time), and per-symbol detail.
    Symbols stored under ``out_root`` but absent from ``symbols`` are removed (a store never
    mixes a shrunk universe with stale symbols). Raises the first symbol's error after every
    other symbol has finished (DataError for absent candles), with the others noted.
    ``map_symbols`` (``qt.fanout``) runs ``materialise_symbol`` per symbol; default: ``workers``
    threads sharing one job (the reference candles read once). ``bybit_root``: the lake holding
    Bybit's series for the cross-venue family (default ``candles_root``).
    """
    t0 = time.perf_counter()
    out_root = Path(out_root)
    if not symbols:
        raise DataError("no symbols to materialise; pass at least one (check --symbols / data.symbols)")
    job = _Job(Path(candles_root), timeframe, params, out_root, None if bybit_root is None else Path(bybit_root))
    unique = list(dict.fromkeys(symbols))
    if map_symbols is None:
        outs = in_threads(max(1, workers))(lambda sym: job.run(sym), unique)
    else:
        outs = map_symbols(materialise_symbol, unique, candles_root=str(candles_root), timeframe=timeframe,
                           params=params, out_root=str(out_root),
                           bybit_root=None if bybit_root is None else str(bybit_root))
    results: dict[str, dict] = dict(zip(unique, outs, strict=True))
    _remove_other_symbols(out_root, set(symbols))
    phases = {k: round(sum(r["phase_seconds"].get(k, 0.0) for r in results.values()), 3) for k in _PHASES}
    return {"rows": sum(r["rows"] for r in results.values()),
            "label_rows": sum(r["label_rows"] for r in results.values()),
            "rows_computed": sum(r["rows_computed"] for r in results.values()),
            "files": sorted(f for r in results.values() for f in r["files"]),
            "seconds": round(time.perf_counter() - t0, 3), "phase_seconds": phases,
            "feature_set_hash": job.feature_hash, "label_set_hash": job.label_hash, "symbols": results}


def read_training_frame(out_root: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """Features joined with labels on (symbol, timestamp): only rows having both, sorted.

    Column order: symbol, timestamp, the feature columns, the label columns.
    """
    feats = store.read_features(out_root, symbols)
    labels = store.read_labels(out_root, symbols)
    return feats.merge(labels, on=store.KEYS, how="inner", sort=False, validate="one_to_one")


def read_feature_inputs(candles_root: Path, symbols: list[str], timeframe: str, params: Params,
                        ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(funding, reference candles) that ``compute_features`` needs for ``symbols``, read from the
    lake exactly as ``materialise`` reads them (None when no enabled family needs one); DataError
    naming the missing input. For callers computing over several symbols at once (the point-in-time
    check of the features stage)."""
    inputs = _LakeInputs(Path(candles_root), timeframe, params)
    fundings, references = [], {}
    for symbol in symbols:
        funding, reference = inputs.load(symbol)
        if funding is not None:
            fundings.append(funding)
        references |= reference
    funding = pd.concat(fundings, ignore_index=True) if fundings else None
    if references:
        return funding, pd.concat(list(references.values()), ignore_index=True)
    return funding, (no_reference() if uses_reference(params.features) else None)


def read_alt_inputs(candles_root: Path, features: FeatureParams) -> AltInputs | None:
    """The alt series the enabled alt families read, from ``<candles_root>/alt`` as ``materialise``
    reads them, and the book family's samples (``features.book_lake``); None when no such family is
    on; DataError naming what to collect when one is empty."""
    needed = alt_series_needed(features)
    if not needed and not features.book:
        return None
    frames = {}
    for name in needed:
        frames[name] = read_alt(Path(candles_root), name)
        if frames[name].empty:
            raise DataError(f"the alt features need the {name} series, absent under {alt_dir(candles_root, name)}; "
                            f"add {name} to alt.series and run `qt collect`, or switch its features off")
    book = read_book_samples(book_root(candles_root, features), features) if features.book else None
    return AltInputs(**frames, book=book)


def read_other_venue(bybit_root: Path, symbols: list[str], timeframe: str, params: Params) -> OtherVenue | None:
    """Bybit's candles and funding of ``symbols``' perpetuals, read as ``materialise`` reads them
    (None when the cross-venue family is off); DataError naming what to collect."""
    if not uses_other_venue(params.features):
        return None
    inputs = _LakeInputs(Path(bybit_root), timeframe, params, Path(bybit_root))
    parts = [inputs.other_venue(symbol) for symbol in symbols if needs_other_venue(symbol, params.features)]
    if not parts:
        return no_other_venue()
    return OtherVenue(pd.concat([p.candles for p in parts], ignore_index=True),
                      pd.concat([p.funding for p in parts], ignore_index=True))


class _Job:
    """One materialisation run's constant inputs; ``run(symbol)`` is the per-symbol unit of work."""

    def __init__(self, candles_root: Path, timeframe: str, params: Params, out_root: Path,
                 bybit_root: Path | None = None):
        self.candles_root, self.timeframe, self.params, self.out_root = candles_root, timeframe, params, out_root
        self.monthly = monthly_partitions(timeframe)
        self.warmup = warmup_bars(params.features)
        self.risk = params.risk if params.labels.triple_barrier else None
        self.feature_hash = feature_set_hash(params.features)
        self.label_hash = label_set_hash(params.labels, params.costs, self.risk)
        self.inputs = _LakeInputs(candles_root, timeframe, params, bybit_root)

    def run(self, symbol: str) -> dict:
        clock = _PhaseClock()
        directory = store.symbol_dir(self.out_root, symbol)
        raw = _raw_fingerprints(candle_path(self.candles_root, symbol, self.timeframe))
        inputs = self.inputs.fingerprints(symbol)
        config = {"symbol": symbol, "timeframe": self.timeframe,
                  "feature_set_hash": self.feature_hash, "label_set_hash": self.label_hash}
        if inputs:
            config["inputs"] = sorted(inputs)
        remove_orphan_temp_files(directory)
        old = store.read_manifest(directory)
        if old is not None and (old.get("config") != config or not _files_present(directory, old)):
            old = None
        keys = sorted(raw)
        if old is None:
            first = keys[0] if keys else ""
        else:
            changed = [k for k in keys if old["raw"].get(k) != raw[k]] + [k for k in old["raw"] if k not in raw]
            changed += self._periods_seeing(keys, old.get("inputs", {}), inputs)
            if not changed:
                return _summary(old, rows_computed=0, files=[], phases=clock.seconds)
            first = min(changed)
        before = [k for k in keys if k < first]
        label_first = before[-1] if (before and old is not None) else first
        with clock("read"):
            candles = _read_symbol_candles(self.candles_root, symbol, self.timeframe,
                                           None if old is None else self._read_start(symbol, first, label_first))
            funding, reference = self.inputs.load(symbol)
            other = self.inputs.other_venue(symbol)
            alt = self.inputs.alt()
        with clock("features"):
            feats = self._features(candles, first, funding, reference, other, alt)
        with clock("labels"):
            lab_candles = candles[candles["timestamp"] >= partition_bounds(label_first)[0]] if old is not None \
                else candles
            labels = make_labels(lab_candles, self.params.labels, self.params.costs, self.risk)

        manifest = {"config": config, "raw": raw, "features": {}, "labels": {}}
        if inputs:
            manifest["inputs"] = inputs
        written: list[str] = []
        for kind, frame, since in (("features", feats, first), ("labels", labels, label_first)):
            with clock(f"write_{kind}"):
                kept = {k: v for k, v in (old or {}).get(kind, {}).items() if k < since}
                manifest[kind] = kept | self._write_parts(directory, kind, frame, since,
                                                          (old or {}).get(kind, {}), written)
        store.write_manifest(directory, manifest)
        return _summary(manifest, rows_computed=len(feats), files=written, phases=clock.seconds)

    def _periods_seeing(self, keys: list[str], old: dict, new: dict) -> list[str]:
        """Candle periods to recompute because an input partition changed: the period holding
        the last bar that opens before the changed partition starts (its close can see the
        partition's first event or candle), or the first period when that is earlier."""
        out = []
        for name in set(old) | set(new):
            before, now = old.get(name, {}), new.get(name, {})
            for period in set(before) | set(now):
                if before.get(period) == now.get(period):
                    continue
                start_ms = int(partition_bounds(period)[0].value // 1_000_000)
                key = partition_key(start_ms - 1, self.monthly)
                hit = next((k for k in keys if k >= key), None)
                if hit is not None:
                    out.append(hit)
        return out

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

    def _features(self, candles: pd.DataFrame, first: str, funding: pd.DataFrame | None,
                  reference: dict[str, pd.DataFrame], other: OtherVenue | None = None,
                  alt: AltInputs | None = None) -> pd.DataFrame:
        """Anchored features of every period from ``first`` on (see the module docstring)."""
        fp = self.params.features
        candles = candles.reset_index(drop=True)
        # each period's window starts `warmup` bars before it, so every row it yields is in the period
        windows = [(max(0, lo - self.warmup), hi)
                   for key, lo, hi in store.partition_slices(candles["timestamp"], self.monthly) if key >= first]
        return compute_features_windows(candles, fp, windows, funding=funding,
                                        reference=_reference_for(candles, reference, fp),
                                        other_venue=_other_venue_for(candles, other), alt=alt)

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


_PHASES = ("read", "features", "labels", "write_features", "write_labels")


class _PhaseClock:
    """Seconds per phase of one symbol's run (``with clock("read"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(_PHASES, 0.0)

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


class _LakeInputs:
    """The multi-input families' inputs read from the lake: each symbol's funding history and
    each reference symbol's candles, whole, read at most once per run (thread-safe)."""

    def __init__(self, root: Path, timeframe: str, params: Params, bybit_root: Path | None = None):
        self.root, self.timeframe, self.features = root, timeframe, params.features
        self.bybit_root = root if bybit_root is None else bybit_root
        self._lock = threading.Lock()
        self._reference: dict[str, pd.DataFrame] = {}
        self._alt: list[AltInputs | None] = []

    def fingerprints(self, symbol: str) -> dict[str, dict[str, list[int]]]:
        """``{input name: {period: [size, mtime_ns]}}`` of the inputs ``symbol``'s features read."""
        needs_funding, references = required_inputs(symbol, self.features)
        out = {f"candles:{ref}": _raw_fingerprints(candle_path(self.root, ref, self.timeframe)) for ref in references}
        if needs_funding:
            out["funding"] = _raw_fingerprints(funding_dir(self.root, symbol))
        if needs_other_venue(symbol, self.features):
            out["bybit:candles"] = _raw_fingerprints(candle_path(self.bybit_root, symbol, self.timeframe, "bybit"))
            out["bybit:funding"] = _raw_fingerprints(funding_dir(self.bybit_root, symbol, "bybit"))
        for name in alt_series_needed(self.features):
            out[f"alt:{name}"] = _raw_fingerprints(alt_dir(self.root, name))
        if self.features.book:
            out["book"] = book_fingerprints(book_root(self.root, self.features), symbol)
        return out

    def alt(self) -> AltInputs | None:
        """The alt series (``read_alt_inputs``), read once per run."""
        with self._lock:
            if not self._alt:
                self._alt.append(read_alt_inputs(self.root, self.features))
            return self._alt[0]

    def load(self, symbol: str) -> tuple[pd.DataFrame | None, dict[str, pd.DataFrame]]:
        """(funding frame or None, {reference symbol: candles}); DataError naming the missing input."""
        fp = self.features
        needs_funding, references = required_inputs(symbol, fp)
        funding = None
        if uses_funding(fp):
            events = read_funding(self.root, symbol) if needs_funding else None
            if needs_funding and events.empty:
                raise DataError(f"{symbol}: no funding history under {funding_dir(self.root, symbol)}; features."
                                f"funding_last/funding_mean/xv need it: collect it (collect.funding: true) or "
                                f"switch those features off")
            funding = events.assign(symbol=symbol) if events is not None else no_funding()
        return funding, {ref: self._reference_candles(symbol, ref) for ref in references}

    def other_venue(self, symbol: str) -> OtherVenue | None:
        """Bybit's candles and funding of ``symbol`` (None when xv is off, empty for a spot symbol);
        DataError naming what to collect when the lake lacks them."""
        if not uses_other_venue(self.features):
            return None
        if not needs_other_venue(symbol, self.features):
            return no_other_venue()
        if not any(candle_path(self.bybit_root, symbol, self.timeframe, "bybit").glob("*.parquet")):
            raise DataError(f"{symbol}: features.xv needs its Bybit {self.timeframe} candles, absent under "
                            f"{self.bybit_root}; {COLLECT_HINT} or set features.xv: false")
        events = read_funding(self.bybit_root, symbol, venue="bybit")
        if events.empty:
            raise DataError(f"{symbol}: features.xv needs its Bybit funding history, absent under "
                            f"{self.bybit_root}; {COLLECT_HINT} or set features.xv: false")
        return OtherVenue(read_candles(self.bybit_root, [symbol], self.timeframe, venue="bybit"),
                          events.assign(symbol=symbol))

    def _reference_candles(self, symbol: str, ref: str) -> pd.DataFrame:
        with self._lock:
            hit = self._reference.get(ref)
        if hit is not None:
            return hit
        if not any(candle_path(self.root, ref, self.timeframe).glob("*.parquet")):
            family = "basis" if ref == symbol.split(":")[0] and ":" in symbol else "cross"
            raise DataError(f"{symbol}: features.{family} needs {ref} {self.timeframe} candles, absent under "
                            f"{self.root}; collect {ref} (add it to data.symbols) or switch features.{family} off")
        frame = read_candles(self.root, [ref], self.timeframe)
        with self._lock:
            return self._reference.setdefault(ref, frame)


def _reference_for(window: pd.DataFrame, reference: dict[str, pd.DataFrame], fp) -> pd.DataFrame | None:
    """The reference candles the bars of ``window`` align to (None when no family needs any)."""
    if not uses_reference(fp):
        return None
    if window.empty or not reference:
        return no_reference()
    first, last = window["timestamp"].iat[0], window["timestamp"].iat[-1]
    return pd.concat([reference_window(r, first, last) for r in reference.values()], ignore_index=True)


def _other_venue_for(window: pd.DataFrame, other: OtherVenue | None) -> OtherVenue | None:
    """Bybit's candles the bars of ``window`` align to (``reference_window``), its funding whole."""
    if other is None or window.empty or other.candles.empty:
        return other
    first, last = window["timestamp"].iat[0], window["timestamp"].iat[-1]
    return OtherVenue(reference_window(other.candles, first, last).reset_index(drop=True), other.funding)


_CANDLE_SCHEMA = pa.schema([("timestamp", pa.timestamp("ms", tz="UTC"))] +
                           [(c, pa.float64()) for c in OHLCV_COLUMNS[1:]])


def _read_symbol_candles(root: Path, symbol: str, timeframe: str, start: pd.Timestamp | None) -> pd.DataFrame:
    """``data.lake.read_candles(root, [symbol], timeframe, start)``, the same frame, read faster:
    the lake's reader converts every yearly partition to pandas on its own, which cost more than
    computing the features; here the partitions are read as Arrow tables (each through one open
    file handle, so an atomic replace cannot mix two files), cast to the lake's types and
    converted once. Anything unusual (no partitions, an unreadable one) is left to the lake's
    reader and its DataError."""
    paths = [p for p in sorted(candle_path(root, symbol, timeframe).glob("*.parquet"))
             if start is None or partition_bounds(p.name[: -len(".parquet")])[1] > start]
    try:
        tables = []
        for path in paths:
            tables.append(read_table(path, columns=OHLCV_COLUMNS).cast(_CANDLE_SCHEMA))
        frame = pa.concat_tables(tables).to_pandas() if tables else None
    except Exception:  # noqa: BLE001 - the lake's reader raises the DataError a user can act on
        frame = None
    if frame is None or (start is not None and not (frame["timestamp"] >= start).any()):
        return read_candles(root, [symbol], timeframe, start=start)
    if start is not None:
        frame = frame[frame["timestamp"] >= start].reset_index(drop=True)
    frame.insert(0, "symbol", pd.array([symbol] * len(frame), dtype="str"))
    return frame


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


def _summary(manifest: dict, rows_computed: int, files: list[str], phases: dict[str, float]) -> dict:
    return {"rows": sum(e["rows"] for e in manifest["features"].values()),
            "label_rows": sum(e["rows"] for e in manifest["labels"].values()),
            "rows_computed": int(rows_computed), "files": files, "phase_seconds": phases,
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
