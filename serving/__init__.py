"""The BentoML signal service: loads the promoted champion from MLflow, computes the same
features the model was trained on from the lake's newest candles, answers ``/signals``; refuses
(503) rather than guess when the model is missing or stale. ``launcher`` runs ``bentoml serve``."""
