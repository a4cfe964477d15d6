"""The page's server side with nothing running: every panel renders a plain 'missing' note
(no traceback), and the Kill/Resume buttons say why they could not act."""

from __future__ import annotations

import json

from dashboard.app import build_app, switch_kill
from dashboard.snapshot import Sources
from qt.paths import StatePaths
from qt.procs import free_port

from tests.dashboard.support import dashboard_params


def _refresh(app) -> dict:
    """POST the page's periodic refresh the way the browser does; the JSON answer by output id."""
    key = next(k for k in app.callback_map if "run-info.children" in k)
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in key.strip(".").split("...")]
    body = {"output": key, "outputs": outputs, "changedPropIds": ["tick.n_intervals"], "state": [],
            "inputs": [{"id": "tick", "property": "n_intervals", "value": 1},
                       {"id": "symbol", "property": "value", "value": None}]}
    resp = app.server.test_client().post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return resp.get_json()["response"]


def test_with_no_stack_at_all_every_panel_says_what_is_missing(tmp_path):
    sources = Sources(dashboard_params(), StatePaths(tmp_path / "nothing"), None, f"http://127.0.0.1:{free_port()}")
    app = build_app(sources)
    assert app.server.test_client().get("/").status_code == 200
    out = _refresh(app)
    text = json.dumps(out)
    assert "no executor state at" in text  # run info, charts and tables
    assert "not configured (REDIS_URL unset)" in text and "unreachable" in text  # redis, service
    assert "no heartbeat" in text and "no MLflow registry" in text
    assert out["symbol"]["options"] == []


def test_kill_and_resume_without_a_reachable_redis_change_nothing_and_say_so():
    assert "no Redis configured" in switch_kill(None, kill=True)
    msg = switch_kill(f"redis://127.0.0.1:{free_port()}/0", kill=False)
    assert msg.startswith("FAILED: Redis at") and "unchanged" in msg and "\n" not in msg


def test_a_busy_port_is_one_line_and_exit_2(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "QT_HOME": str(tmp_path)}
        env.pop("QT_PARAMS", None)
        out = subprocess.run([sys.executable, "-m", "cli.main", "dashboard", "--port", str(port)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == \
        f"error: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use"
