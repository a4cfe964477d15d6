"""``python -m data.collector``: the collector from a shell, without the ``qt`` CLI.

Why a module of its own: the argument parsing and exit codes are a command line, not part of
collecting; ``python -m data.collector --root DIR --exchange-url URL --symbols A,B --timeframe 1h``
runs ``collect_universe`` and prints its JSON report (exit 0 when every symbol completed, 1
otherwise, 2 for a usage or configuration error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.collector.run import collect_universe
from qt.config import load_params
from qt.errors import UserError

DESCRIPTION = "Incremental collection from a Binance-compatible exchange (through ccxt) into the raw lake."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.collector", description=DESCRIPTION)
    parser.add_argument("--root", required=True, help="raw lake directory")
    parser.add_argument("--exchange-url", default=None, help="http://HOST:PORT of a Binance-compatible server")
    parser.add_argument("--symbols", default=None, help="comma-separated ccxt symbols (default: params)")
    parser.add_argument("--timeframe", default=None)
    parser.add_argument("--start", default=None)
    parser.add_argument("--end", default=None)
    parser.add_argument("--params", default=None, help="params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="collect.KEY=JSON",
                        help="override a collect parameter, e.g. --set collect.page_limit=500")
    args = parser.parse_args(argv)
    overrides: dict = {"data": {}, "collect": {}}
    if args.symbols:
        overrides["data"]["symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    for key in ("timeframe", "start", "end"):
        if getattr(args, key) is not None:
            overrides["data"][key] = getattr(args, key)
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section != "collect" or not name or not value:
            print(f"--set {item!r}: expected collect.KEY=VALUE", file=sys.stderr)
            return 2
        try:
            overrides["collect"][name] = json.loads(value)
        except json.JSONDecodeError:
            overrides["collect"][name] = value
    try:
        params = load_params(args.params, overrides)
        report = collect_universe(params, Path(args.root), exchange_url=args.exchange_url)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
