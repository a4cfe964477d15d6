"""Point-in-time features and labels: ``compute`` (indicators), ``labels`` (forward returns),
``store`` (per-symbol Parquet), ``pit`` (lookahead and warm-up checks)."""
