"""Run the real ``bentoml serve`` for ``serving.service:SignalService`` as a process we own.

Used by ``qt serve`` and the pipeline's serve stage. The process gets the tool
environment of ``StatePaths`` (so MLflow, BentoML and the lake all live under
QT_HOME) plus QT_PARAMS, runs from the project root, logs to
``<QT_HOME>/logs/serving-<port>.log`` and is stopped by PID (process group) on
``stop()`` or on leaving the ``with`` block, also when the body raises.
Cold start (imports + champion load) is ~20-30 s on a 2-core machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from qt.paths import PROJECT_ROOT, StatePaths
from qt.procs import ManagedProcess, free_port

SERVICE_TARGET = "serving.service:SignalService"


class ServiceProcess:
    """``bentoml serve`` on ``host:port``; ``wait_live``/``wait_ready`` poll its health routes."""

    def __init__(self, paths: StatePaths, params_path: Path | str | None = None, port: int | None = None,
                 host: str = "127.0.0.1", extra_env: dict[str, str] | None = None):
        self.paths = paths
        self.host = host
        self.port = port or free_port()
        env = {**os.environ, **paths.tool_env()}
        if params_path is not None:
            env["QT_PARAMS"] = str(Path(params_path).resolve())
        else:
            env.pop("QT_PARAMS", None)
        env.update(extra_env or {})
        bentoml_exe = Path(sys.executable).with_name("bentoml")
        argv = [str(bentoml_exe), "serve", SERVICE_TARGET, "--host", host, "--port", str(self.port)]
        paths.logs.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(f"bentoml serve (port {self.port})", argv, env=env,
                                      log_path=paths.logs / f"serving-{self.port}.log", cwd=PROJECT_ROOT)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> "ServiceProcess":
        self.process.start()
        return self

    def wait_live(self, timeout_s: float = 90.0) -> "ServiceProcess":
        """Until the HTTP server answers ``/livez`` (the champion may still be missing)."""
        self.process.wait_until(lambda: self._status("/livez") == 200, timeout_s, "live")
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> "ServiceProcess":
        """Until ``/readyz`` is 200, i.e. a champion is loaded; raises with the log tail otherwise."""
        self.process.wait_until(lambda: self._status("/readyz") == 200, timeout_s, "ready (champion loaded)")
        return self

    def stop(self) -> None:
        self.process.stop()

    def log_tail(self, n: int = 40) -> str:
        return self.process.log_tail(n)

    def _status(self, path: str) -> int:
        return httpx.get(self.url + path, timeout=2.0).status_code

    def __enter__(self) -> "ServiceProcess":
        if self.process.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
