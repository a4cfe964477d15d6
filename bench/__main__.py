"""``make bench``: run every benchmark, print a table, write ``reports/bench.json``."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from bench import features, market_data

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = {"started": started, "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
               "market_data": market_data.run(), "features": features.run()}
    out = ROOT / "reports" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
