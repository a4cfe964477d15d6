"""Start and stop the real services (redis-server, bentoml serve) we depend on.

Every process is started in its own session so that stopping it by PID also
stops its children (bentoml serve forks workers). ``ManagedProcess`` is a
context manager: the process is stopped on exit, also when the body raises.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from qt.errors import QTError


# Every process group this interpreter started; tests use it to prove nothing is left running.
STARTED_GROUPS: list[int] = []


def live_group_members(pgids: list[int]) -> list[str]:
    """``pid args`` of live processes in any of ``pgids`` (empty when all were stopped)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    alive = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and int(parts[1]) in pgids and not parts[2].startswith("Z"):
            alive.append(line.strip())
    return alive


def free_port() -> int:
    """A currently free TCP port on loopback (bind to 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ManagedProcess:
    """A subprocess we own: started in a new session, stopped by PID (process group)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
                 log_path: Path | None = None, cwd: Path | None = None):
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ManagedProcess":
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        STARTED_GROUPS.append(self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``ready`` until true; fail fast if the process died, with its log tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise QTError(f"{self.name} exited with code {self.proc.returncode} before {what}; "
                              f"log tail:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - readiness probes fail while starting
                pass
            time.sleep(0.2)
        raise QTError(f"{self.name} not {what} after {timeout_s:.0f}s; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left. Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # children that outlived the leader are still in the group
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ManagedProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_redis(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start Debian's ``redis-server`` on a free loopback port, no persistence.

    Returns the process and its URL. Raises with a fix if redis-server is missing.
    """
    from shutil import which

    exe = which("redis-server")
    if exe is None:
        raise QTError("redis-server not found; run `make run` (it installs Debian's redis-server) "
                      "or set REDIS_URL to a running Redis")
    port = port or free_port()
    proc = ManagedProcess("redis-server", [exe, "--port", str(port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no"],
                          log_path=log_dir / f"redis-{port}.log").start()
    url = f"redis://127.0.0.1:{port}/0"

    def _ping() -> bool:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())

    try:
        proc.wait_until(_ping, 20, "answering PING")
    except BaseException:
        proc.stop()
        raise
    return proc, url
