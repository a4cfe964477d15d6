"""The pipeline as Prefect flows: ``pipeline.py`` composes the plain stage functions of
``stages.py`` (collect -> validate -> features -> train -> evaluate -> promote -> serve and
execute) in the order a candle travels; ``collect``, ``features_flow``, ``retrain`` and ``drift``
are the deployable flows of ``prefect.yaml``; ``runner`` picks the task runner (threads or Dask).
Flows stay thin: tests call the stage functions directly."""
