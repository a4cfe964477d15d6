"""Trading on an exchange through ccxt, with the same ``TradingLoop`` as the backtest.

* ``broker``    - CcxtBroker: USDT-M perpetuals, idempotent client order ids, sends and look-ups
* ``guards``    - the protective orders on the exchange (stop, take-profit, native trailing stop)
* ``resting``   - limit entries that rest on the exchange and the managed trailing stop
* ``ladder``    - take-profit ladder rungs (partial closes, break-even) and the safe "new, then cancel" move
* ``liquidation`` - a position the exchange liquidated: its exit fill, log line and alert
* ``spot``      - SpotBroker (an OCO list guards the coins) and its start-up reconciliation
* ``emergency`` - a stop refused as already crossed closes the position at market
* ``reconcile`` - start-up reconciliation (perps) and the one cancel-orphans rule
* ``leverage``  - leverage and margin mode set and read back before trading
* ``journal``   - OrderJournal: every send written down before it leaves
* ``trader``    - LiveTrader: the exchange's clock, catch-up of missed bars, alerts
"""
