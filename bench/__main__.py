"""``make bench``: run the benchmarks, print them, write ``reports/bench.json``.

``python -m bench`` runs every benchmark; ``python -m bench features [training ...]`` runs the
named ones only and updates just their sections of an existing ``reports/bench.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("market_data", "features", "training", "serving", "newbar", "executor", "risk_rules", "tune", "scale")


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)} (none = all)", file=sys.stderr)
        return 2
    out = ROOT / "reports" / "bench.json"
    results = json.loads(out.read_text()) if (out.is_file() and len(names) < len(BENCHMARKS)) else {}
    results["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for name in names:
        results[name] = importlib.import_module(f"bench.{name}").run()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps({n: results[n] for n in names}, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
