"""Trading on an exchange through ccxt: broker (perps), spot, resting limit entries, reconcile, journal, trader."""
