"""``python -m exchange --data DIR --port P [--host H] [--now ISO] [--faults JSON] [--book LEVELS]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qt.errors import UserError
from exchange import LOOPBACK, run_server_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange",
                                     description="Serve the local Binance-compatible exchange.")
    parser.add_argument("--data", type=Path, required=True, help="directory laid out like ../shared/data")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--now", default=None, help="replay instant (ISO, UTC); default: the wall clock")
    parser.add_argument("--faults", default=None, help="fault config as JSON (see exchange.faults)")
    parser.add_argument("--book", type=Path, default=None,
                        help="levels.parquet or a directory of them: market orders walk that book (exchange.book_fills)")
    args = parser.parse_args(argv)
    try:
        run_server_cli(args.data, args.port, args.host, args.now, args.faults, book=args.book)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
