"""Fan-out of per-symbol work: the one contract the stages' ``map_symbols`` argument follows.

A stage that does the same independent work for each symbol (validation suites, feature
materialisation; collection has its own in ``data.sources``) takes a ``map_symbols`` callable:

    map_symbols(fn, symbols, **kwargs) -> [fn(symbol, **kwargs) for symbol in symbols]

in the order of ``symbols``, however it runs them (a thread pool here; Prefect tasks on a
thread pool or a Dask cluster in ``flows.runner``). One symbol's failure does not stop the
others: every symbol finishes, then the first failure is raised with the others noted, so a
report names every bad symbol at once. ``fn`` must be a module-level function whose arguments
and result pickle (a Dask worker runs it in another process, maybe on another machine), and it
reads its own inputs from the state directory rather than receiving frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SymbolMap = Callable[..., list]


def raise_first(failures: Sequence[tuple[str, BaseException]]) -> None:
    """Raise the first ``(symbol, error)``, the others added as a note; nothing when empty."""
    if not failures:
        return
    first = failures[0][1]
    if len(failures) > 1:
        first.add_note("also failed: " + "; ".join(str(e) if str(e).startswith(s) else f"{s}: {e}"
                                                   for s, e in failures[1:]))
    raise first


def in_threads(workers: int) -> SymbolMap:
    """The local fan-out: ``workers`` threads (1 = in order, in the calling thread)."""

    def map_symbols(fn: Callable[..., Any], symbols: Sequence[str], **kwargs) -> list:
        results: dict[str, Any] = {}
        failures: list[tuple[str, BaseException]] = []
        if workers <= 1:
            for sym in symbols:
                try:
                    results[sym] = fn(sym, **kwargs)
                except Exception as exc:  # noqa: BLE001 - raised below, after the other symbols ran
                    failures.append((sym, exc))
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="per-symbol") as pool:
                futures = {sym: pool.submit(fn, sym, **kwargs) for sym in symbols}
                for sym, fut in futures.items():
                    try:
                        results[sym] = fut.result()
                    except Exception as exc:  # noqa: BLE001 - raised below, after the other symbols ran
                        failures.append((sym, exc))
        raise_first(failures)
        return [results[s] for s in symbols]

    return map_symbols


sequential = in_threads(1)
