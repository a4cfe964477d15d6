"""executor: one decision core, one risk engine, one broker interface, one trading loop.

* ``signals``   - Signal contract, thresholds, signal sources (a frame; ``HttpSignalSource``: the service)
* ``portfolio`` - value types (Bar, Fill, Position) and the ledger
* ``core``      - pure decisions: bar + signals + portfolio -> order intents
* ``risk``      - RiskEngine: Approved / Denied(reason, numbers); ACTIVE/REDUCING/HALTED
* ``sizing``    - volatility-targeted entry sizes
* ``funding``   - perpetual funding: schedule, coverage check, pure settlement rule
* ``broker``    - Broker: what the loop asks of a broker (paper, perps, spot); Rejection
* ``paper``     - PaperBroker: next-open fills, slippage, fees, intrabar stop/TP
* ``loop``      - TradingLoop: the bar-by-bar driver shared by backtest, paper daemon and live
* ``listeners`` - what a failing loop listener does (state-write failure blocks entries)
* ``backtest``  - run_backtest, buy_and_hold, flat_baseline, metrics
* ``state`` / ``events`` / ``metrics`` - SQLite record, Redis streams + kill switch + heartbeat,
  Prometheus metrics
* ``daemon``    - run_paper_replay, run_live
* ``live/``     - trading on an exchange through ccxt (``executor.live``): the perps and spot
  brokers, their protective orders and resting entries, start-up reconciliation, the order
  journal and the exchange-clocked trader
"""
