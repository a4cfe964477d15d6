"""docker-compose.yml agrees with the code: every command is a real entry point of this project's
environment with options it accepts, every environment variable is one something in that
container reads, the paths and URLs line up with the settings, and no secret is written down.
(Docker itself is not available here: this checks the file, it does not run it.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROJECT_SERVICES = {n: s for n, s in SERVICES.items() if s.get("image") == "quantum-trader:latest"}
ENTRY_POINTS = {"qt", "bentoml", "prefect", "mlflow", "dask"}  # console scripts of the locked environment
CODE_DIRS = ("qt", "data", "exchange", "features", "training", "serving", "executor", "flows", "dashboard", "cli")
SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|WEBHOOK", re.IGNORECASE)
SUBSTITUTION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
# read by the upstream image itself (postgres's documented initialisation variables)
UPSTREAM_IMAGE_VARS = {"postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}}


def _resolve(value: str) -> str:
    """Compose's interpolation with an empty environment: ``${X:-d}`` -> d, ``${X:?msg}`` -> a stand-in."""
    return SUBSTITUTION.sub(lambda m: m.group(3) if m.group(2) == "-" else f"<{m.group(1)}>", str(value))


def _code_text() -> str:
    return "\n".join(p.read_text() for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def _site_packages_text(package: str, *files: str) -> str:
    base = Path(__import__(package).__file__).parent
    return "\n".join((base / f).read_text() for f in files)


def _env_readers() -> dict[str, callable]:
    import prefect.settings

    code = _code_text()
    mlflow_text = _site_packages_text("mlflow", "environment_variables.py", "cli/__init__.py")
    bentoml_text = _site_packages_text("bentoml", "_internal/configuration/__init__.py",
                                       "_internal/configuration/containers.py")
    return {
        "project": lambda name: f'"{name}"' in code,
        "prefect": lambda name: name.startswith("PREFECT_") and hasattr(prefect.settings, name),
        "mlflow": lambda name: name.startswith("MLFLOW_") and f'"{name}"' in mlflow_text,
        "bentoml": lambda name: name.startswith("BENTOML_") and f'"{name}"' in bentoml_text,
    }


def test_the_layout_has_every_service_of_the_production_stack():
    assert {"redis", "postgres", "mlflow", "prefect-server", "prefect-worker", "serving", "executor",
            "dashboard"} <= set(SERVICES)
    assert {"mlflow", "prefect-server", "prefect-worker", "serving", "executor", "dashboard"} <= set(PROJECT_SERVICES)
    build = PROJECT_SERVICES["serving"]["build"]
    assert (ROOT / build["context"] / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES))
def test_each_project_command_is_an_entry_point_that_accepts_its_options(name):
    argv = [_resolve(a) for a in PROJECT_SERVICES[name]["command"]]
    assert argv[0] in ENTRY_POINTS, f"{name}: {argv[0]} is not one of {sorted(ENTRY_POINTS)}"
    exe = VENV_BIN / argv[0]
    assert exe.is_file(), f"{exe} is not installed in the project environment"
    # the sub-command path: leading words and global flags, up to the first option after a word
    path, seen_word = [], False
    for token in argv[1:]:
        if token.startswith("-") and seen_word:
            break
        if ":" in token or "/" in token:  # a target or an address, not a sub-command
            break
        path.append(token)
        seen_word |= not token.startswith("-")
    out = subprocess.run([str(exe), *path, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, f"{name}: `{argv[0]} {' '.join(path)} --help` failed: {out.stderr[-400:]}"
    help_text = out.stdout + out.stderr
    for option in (t.split("=")[0] for t in argv[1:] if t.startswith("--")):
        assert option in help_text, f"{name}: {argv[0]} {' '.join(path)} has no option {option}"


def test_the_service_target_and_the_qt_commands_exist():
    target = next(a for a in PROJECT_SERVICES["serving"]["command"] if ":" in a)
    module, _, cls = target.partition(":")
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    assert f"class {cls}" in source
    dashboard = PROJECT_SERVICES["dashboard"]["command"]
    assert dashboard[:6] == ["qt", "dashboard", "--host", "0.0.0.0", "--port", "8050"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_environment_variable_is_read_by_the_code_or_the_tool_in_that_container(name):
    readers = _env_readers()
    for var in SERVICES[name].get("environment") or {}:
        if var in UPSTREAM_IMAGE_VARS.get(name, set()):
            continue
        assert name in PROJECT_SERVICES, f"{name}: {var} set on an upstream image without a documented reader"
        assert any(read(var) for read in readers.values()), \
            f"{name}: nothing in the project or its tools reads {var}"


def test_secrets_come_from_the_environment_never_from_the_file():
    text = (ROOT / "docker-compose.yml").read_text()
    for name, service in SERVICES.items():
        for var, value in (service.get("environment") or {}).items():
            if SECRET.search(var):
                m = SUBSTITUTION.fullmatch(str(value))
                assert m and m.group(1) == var and not (m.group(2) == "-" and m.group(3)), \
                    f"{name}: {var} must be ${{{var}}} (or ${{{var}:-}} / ${{{var}:?...}}), not {value!r}"
        for arg in service.get("command") or []:
            assert not SECRET.search(str(arg)), f"{name}: a secret-looking argument {arg!r} (ps shows argv)"
    for password in re.findall(r"://[^:/\s@]+:([^@\s]+)@", text):  # credentials inside URLs
        assert SUBSTITUTION.fullmatch(password), f"a literal password in a URL: {password!r}"


def test_paths_and_urls_agree_with_the_settings_the_code_reads():
    from qt.paths import StatePaths

    env = PROJECT_SERVICES["serving"]["environment"]
    home = Path(env["QT_HOME"])
    for name in ("prefect-worker", "serving", "executor", "dashboard"):
        service = PROJECT_SERVICES[name]
        assert service["environment"]["QT_HOME"] == str(home)
        assert f"state:{home}" in service["volumes"]
        params = service["environment"]["QT_PARAMS"]
        assert any(v.endswith(f":{params}:ro") and v.startswith("./params.yaml") for v in service["volumes"])
    mlflow = [_resolve(a) for a in PROJECT_SERVICES["mlflow"]["command"]]
    # the code writes artifacts under StatePaths.mlflow_artifacts; the server serves that directory
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == str(StatePaths(home).mlflow_artifacts)
    assert f"state:{home}" in PROJECT_SERVICES["mlflow"]["volumes"]
    port = mlflow[mlflow.index("--port") + 1]
    assert env["QT_MLFLOW_URI"] == f"http://mlflow:{port}"
    assert any(h == f"mlflow:{port}" for h in mlflow[mlflow.index("--allowed-hosts") + 1].split(","))
    for name in ("executor", "dashboard"):
        assert PROJECT_SERVICES[name]["environment"]["REDIS_URL"].startswith("redis://redis:")
        command = PROJECT_SERVICES[name]["command"]
        serving_port = PROJECT_SERVICES["serving"]["command"][-1]
        assert command[command.index("--service-url") + 1] == f"http://serving:{serving_port}"


def test_the_executor_trades_paper_unless_told_otherwise_and_never_live_from_this_file():
    command = PROJECT_SERVICES["executor"]["command"]
    resolved = [_resolve(a) for a in command]
    assert resolved[resolved.index("--mode") + 1] == "paper"
    assert all("--i-understand-live" not in map(str, s.get("command") or []) for s in SERVICES.values())


def test_the_tracking_uri_follows_qt_mlflow_uri(monkeypatch, tmp_path):
    from qt.paths import StatePaths

    monkeypatch.delenv("QT_MLFLOW_URI", raising=False)
    assert StatePaths(tmp_path).tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("QT_MLFLOW_URI", "http://mlflow:5000")
    paths = StatePaths(tmp_path)
    assert paths.tracking_uri == "http://mlflow:5000"
    assert paths.tool_env()["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"  # what bentoml serve inherits
