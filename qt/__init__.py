"""The ground floor every other folder stands on, and which imports none of them: typed config
(``config``), the state directory (``paths``), errors, the timeframe table, atomic writes, the
Binance ccxt client with its error classification (``binance``) and redaction (``redact``), the
stop and trailing trigger rules (``fills``), retries (``backoff``), processes we start and stop
(``procs``), fan-out, notifications, and the guard against trading mainnet by mistake."""
