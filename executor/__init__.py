"""executor: one decision core, one risk engine, one broker interface, one trading loop.

* ``signals``   - Signal contract, thresholds, signal sources (frame; HTTP in ``daemon``)
* ``portfolio`` - value types (Bar, Fill, Position) and the ledger
* ``core``      - pure decisions: bar + signals + portfolio -> order intents
* ``risk``      - RiskEngine: Approved / Denied(reason, numbers); ACTIVE/REDUCING/HALTED
* ``funding``   - perpetual funding: schedule, coverage check, pure settlement rule
* ``paper``     - PaperBroker: next-open fills, slippage, fees, intrabar stop/TP
* ``loop``      - TradingLoop: the bar-by-bar driver shared by backtest and daemon
* ``backtest``  - run_backtest, buy_and_hold, flat_baseline, metrics
* ``state`` / ``events`` - SQLite record, Redis streams + kill switch + heartbeat
* ``daemon``    - HttpSignalSource, run_paper_replay, run_live
* ``ccxt_broker`` / ``live`` / ``reconcile`` - the live broker (USDT-M, protectives on the
  exchange, idempotent client ids), the exchange-clocked loop, start-up reconciliation
"""
