"""Executor tests: risk engine, paper broker, backtest, paper daemon."""
