"""Write params.yaml from the embedded defaults in qt/config.py, each section headed by its docstring.

Run after changing a default: `.venv/bin/python scripts/write_params.py`. A test checks that the
committed params.yaml equals the embedded defaults, so the two cannot drift apart.
"""

from pathlib import Path

import yaml

from qt.config import Params

ROOT = Path(__file__).resolve().parent.parent


class _Dumper(yaml.SafeDumper):
    """Block mappings, inline lists: one setting per line, short lists on one line."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render() -> str:
    out = ["# Quantum Trader configuration: every number that changes a decision.",
           "# Validated at start-up against qt/config.py (unknown keys and bad values are refused).",
           "# DVC tracks this file as params: changing a section re-runs the stages that use it.", ""]
    defaults = Params()
    for name, field in Params.model_fields.items():
        doc = ((field.annotation.__doc__ or "").strip().splitlines() or [""])[0]
        if doc:
            out.append(f"# {doc}")
        section = {name: getattr(defaults, name).model_dump(mode="json")}
        out.append(yaml.dump(section, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100).rstrip())
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    (ROOT / "params.yaml").write_text(render())
    print(f"wrote {ROOT / 'params.yaml'}")
