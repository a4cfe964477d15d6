"""From features to a champion: walk-forward splits, the model members and their ensemble,
holdout backtests against the baselines, the gates (deflated Sharpe over every counted trial,
bootstrap CI, drawdown), the MLflow registry adapter, approval rules, drift, and the train /
evaluate / promote stage functions."""
