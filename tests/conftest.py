"""Suite-wide settings: telemetry off, the shared real data location, its skip rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _k, _v in {"BENTOML_DO_NOT_TRACK": "true", "GX_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_k, _v)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (PROJECT_ROOT.parent / "shared" / "data").resolve()


def require_shared_data() -> Path:
    """The real Binance candles beside the project, or skip saying why."""
    if not (SHARED_DATA / "ohlcv").is_dir():
        pytest.skip(f"../shared/data absent ({SHARED_DATA}): real-candle tests need the shared data set")
    return SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()
