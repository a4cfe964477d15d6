"""Order-book replay: raw Binance depth/trade/bookTicker recordings -> an exact L2 book.

``messages`` parses the recording (streaming), ``sequencing`` holds Binance's update-id rules,
``replay`` rebuilds the book with gap detection and resync, ``check`` proves it against the
recorded bookTicker, ``store`` keeps a recording as compact Parquet in the lake.
"""
