"""``qt run`` at scale (issue 18): wall time and peak RSS per stage on 64 / 256 / 566 synthetic symbols.

Each stage runs as the command a user types, in a fresh process on a fresh state directory, on the
default params with ``data.symbols`` = N synthetic symbols (``S000/USDT`` ..) of ``synthetic.bars``
1h bars: ``qt collect``, ``validate``, ``features``, ``train``, ``evaluate``, ``promote``, then
serve + execute (``qt serve`` and ``qt execute --mode paper``: the paper replay of the holdout over
HTTP, one ``/signals`` per bar - what ``qt run`` does last). Per stage: seconds and the process's
peak resident set (``ru_maxrss`` from ``wait4``: the whole stage, imports included); for serve +
execute the executor's peak and the service's (its process tree, sampled every 0.2 s; they run
side by side, so the stage's peak is their sum). Over the sizes: the exponent ``b`` of
``seconds ~ symbols^b`` and of ``peak ~ symbols^b`` per stage (least squares on logs; 1 = linear),
seconds per 100 symbols at the largest size, and the targets at 566: peak < 8 GB, whole run
< 30 min (the first /signals batch of a new bar is the ``newbar`` section's).

Sizes: ``QT_BENCH_SCALE`` (default ``64,256,566``); bars: ``QT_BENCH_SCALE_BARS`` (default 6000,
the issue's table). The 566 run takes tens of minutes; a stage that fails (e.g. out of memory) is
reported with its error and the size's later stages are not run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
QT = [sys.executable, "-m", "cli.main"]
STAGES = ("collect", "validate", "features", "train", "evaluate", "promote", "serve_execute")
TARGET_PEAK_GB, TARGET_RUN_MINUTES = 8.0, 30.0


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_rss_kb(root: int) -> int:
    """RSS of ``root`` and every descendant (the service and its workers), summed."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kb(pid)
        todo.extend(kids.get(pid, []))
    return total


def _timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float, int]:
    """(seconds, peak GB, exit code) of one command, run to its end."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1e6, proc.returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_execute(params_file: Path, env: dict, log: Path, port: int, champion: bool) -> dict:
    """``qt serve`` in the background, ``qt execute --mode paper`` against it (once the champion is
    loaded; without one, once it is live - the executor then opens nothing, as in ``qt run``);
    both stopped by PID."""
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        service = subprocess.Popen(QT + ["serve", "--params", str(params_file), "--port", str(port)], env=env,
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _tree_rss_kb(service.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + ("/readyz" if champion else "/livez"), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if service.poll() is not None:
                raise RuntimeError(f"qt serve exited {service.returncode}; see {log}")
            time.sleep(1.0)
        else:
            raise RuntimeError(f"qt serve not live in 600 s; see {log}")
        ready = time.perf_counter() - t0
        seconds, executor_peak, code = _timed(QT + ["execute", "--mode", "paper", "--params", str(params_file),
                                                    "--service-url", url], env, log)
    finally:
        stop.set()
        sampler.join()
        if service.poll() is None:
            os.killpg(service.pid, 15)
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, 9)
                service.wait()
    return {"seconds": round(time.perf_counter() - t0, 1), "service_start_seconds": round(ready, 1),
            "champion_served": champion,
            "replay_seconds": round(seconds, 1), "executor_peak_gb": round(executor_peak, 2),
            "service_peak_gb": round(peak[0] / 1e6, 2), "peak_gb": round(executor_peak + peak[0] / 1e6, 2),
            "exit_code": code}


def one_size(n: int, home: Path, bars: int) -> dict:
    """Every stage of ``qt run`` on ``n`` synthetic symbols, one command each (see the docstring)."""
    from qt.config import load_params
    from qt.paths import StatePaths

    port = _free_port()
    params = load_params(overrides={"data": {"symbols": [f"S{i:03d}/USDT" for i in range(n)]},
                                    "synthetic": {"bars": bars}, "serving": {"port": port}})
    params_file = home / "params.yaml"
    home.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    paths = StatePaths(home / "state").ensure()
    env = {**os.environ, **paths.tool_env(), "PYTHONPATH": str(ROOT)}
    log = home / "stages.log"
    out: dict = {"symbols": n, "bars": bars, "stages": {}}
    for name in STAGES:
        if name == "serve_execute":
            from training.registry import champion_version

            stage = _serve_execute(params_file, env, log, port,
                                   champion_version(paths.tracking_uri, params.train.model_name) is not None)
        else:
            seconds, peak, code = _timed(QT + [name, "--params", str(params_file)], env, log)
            stage = {"seconds": round(seconds, 1), "peak_gb": round(peak, 2), "exit_code": code}
        out["stages"][name] = stage
        print(f"scale {n}: {name} {stage}", file=sys.stderr, flush=True)
        if stage["exit_code"] != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            out["error"] = f"{name} exited {stage['exit_code']}: {tail[0][:300]}"
            break
    out["seconds"] = round(sum(s["seconds"] for s in out["stages"].values()), 1)
    out["peak_gb"] = max(s["peak_gb"] for s in out["stages"].values())
    return out


def _exponent(xs: list[float], ys: list[float]) -> float | None:
    """b of y ~ a x^b, least squares on logs; None with fewer than two usable points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 2) if sxx else None


def run() -> dict:
    sizes = [int(x) for x in os.environ.get("QT_BENCH_SCALE", "64,256,566").split(",") if x.strip()]
    bars = int(os.environ.get("QT_BENCH_SCALE_BARS", "6000"))
    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"qt-scale-{n}-") as tmp:
            runs.append(one_size(n, Path(tmp), bars))
    ok = [r for r in runs if "error" not in r]
    fit = {}
    for stage in STAGES:
        xs = [r["symbols"] for r in ok]
        fit[stage] = {"seconds_exponent": _exponent(xs, [r["stages"][stage]["seconds"] for r in ok]),
                      "peak_exponent": _exponent(xs, [r["stages"][stage]["peak_gb"] for r in ok])}
    biggest = max(ok, key=lambda r: r["symbols"]) if ok else None
    per_100 = ({s: round(biggest["stages"][s]["seconds"] / biggest["symbols"] * 100, 1) for s in STAGES}
               if biggest else None)
    return {"runs": runs, "fitted_exponents": fit, "seconds_per_100_symbols_at_largest": per_100,
            "targets_at_566": {"peak_gb": TARGET_PEAK_GB, "run_minutes": TARGET_RUN_MINUTES,
                               "measured": next(({"peak_gb": r["peak_gb"], "run_minutes": round(r["seconds"] / 60, 1)}
                                                 for r in ok if r["symbols"] == 566), None)}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
