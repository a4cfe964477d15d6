"""The service's settings, read ONCE from the environment at the service boundary.

Only ``ServingSettings.from_environ`` looks at environment variables; everything
below it receives typed values. Variables read:

* ``QT_HOME`` - state directory (``qt.paths.StatePaths``); unset = ``<project>/state``.
* ``QT_PARAMS`` - path of ``params.yaml``; unset = the embedded defaults.
* ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` - the registry holding the
  champion; unset = the sqlite database under ``QT_HOME``.
* ``QT_LAKE`` / ``QT_BYBIT_LAKE`` - the lake to read / the one holding Bybit's series (cross-venue
  features; default ``QT_LAKE``, else ``data.sources.venue_lake_root``).
* ``QT_SERVING_RELOAD_SECONDS`` - overrides ``serving.reload_interval_seconds``
  (tests poll fast; production keeps the params value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pathlib import Path

from qt.config import Params, load_params
from qt.errors import ConfigError
from qt.paths import StatePaths


@dataclass(frozen=True)
class ServingSettings:
    paths: StatePaths
    params: Params
    tracking_uri: str
    registry_uri: str
    reload_interval_s: float
    lake: Path  # the raw candle lake the service reads (QT_LAKE, else the configured source's lake)
    # the lake holding Bybit's series for the cross-venue features (QT_LAKE: the same root)
    bybit_lake: Path | None = None

    @property
    def model_name(self) -> str:
        return self.params.train.model_name

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> "ServingSettings":
        """Build the settings from ``env``; ConfigError names the bad variable."""
        paths = StatePaths.from_env(dict(env))
        params_path = env.get("QT_PARAMS") or None
        params = load_params(params_path)
        tracking_uri = env.get("MLFLOW_TRACKING_URI") or paths.tracking_uri
        registry_uri = env.get("MLFLOW_REGISTRY_URI") or tracking_uri
        reload_s = params.serving.reload_interval_seconds
        raw = env.get("QT_SERVING_RELOAD_SECONDS")
        if raw:
            try:
                reload_s = float(raw)
            except ValueError:
                raise ConfigError(f"QT_SERVING_RELOAD_SECONDS={raw!r} is not a number; "
                                  f"give seconds, e.g. 2") from None
            if not math.isfinite(reload_s) or reload_s <= 0:
                raise ConfigError(f"QT_SERVING_RELOAD_SECONDS={raw!r} must be a positive number of seconds")
        from data.sources import lake_root, venue_lake_root

        lake = Path(env["QT_LAKE"]) if env.get("QT_LAKE") else lake_root(params, paths)
        bybit_env = env.get("QT_BYBIT_LAKE") or env.get("QT_LAKE")
        bybit_lake = Path(bybit_env) if bybit_env else venue_lake_root(params, paths, "bybit")
        return cls(paths=paths, params=params, tracking_uri=tracking_uri,
                   registry_uri=registry_uri, reload_interval_s=reload_s, lake=lake, bybit_lake=bybit_lake)
