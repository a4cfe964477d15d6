"""Suite-wide settings: telemetry off, and the ``shared_data`` fixture (the shared real data
location and its skip rule live in ``tests.support``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import require_shared_data

for _k, _v in {"BENTOML_DO_NOT_TRACK": "true", "GX_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture
def shared_data() -> Path:
    return require_shared_data()
