"""Helpers for tests that run the installed `qt` command: run it against a state directory, and
check that a user's mistake is one line on stderr, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

QT = str(Path(sys.executable).with_name("qt"))


def run_qt(args, home: Path, **env):
    e = {**os.environ, "QT_HOME": str(home), **env}
    e.pop("QT_PARAMS", None)
    return subprocess.run([QT, *args], capture_output=True, text=True, env=e, timeout=120)


def assert_one_line_error(res, fragment):
    """Exit 2, exactly one `error:` line (progress lines may precede it), no traceback."""
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.stderr
    assert res.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in res.stderr
