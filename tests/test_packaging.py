"""A gateway installs only what it needs: the [edge] extra and the edge code stay free of cloud libraries."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLOUD_ONLY = ("fastapi", "scikit-learn", "sqlalchemy", "uvicorn", "influxdb-client")


def test_edge_extra_has_no_cloud_libraries():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    edge = [d.lower() for d in project["optional-dependencies"]["edge"]]
    assert not [d for d in edge if d.startswith(CLOUD_ONLY)]
    assert {d.split(">")[0] for d in edge} >= {"paho-mqtt", "asyncua", "numba"}


def test_the_edge_agent_imports_no_cloud_module():
    code = ("import sys, edge.agent, edge.detect, edge.outbox; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('cloud', 'fastapi', 'sqlalchemy', 'sklearn', "
            "'influxdb_client', 'simulators')]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_cloud_never_imports_edge_and_edge_never_imports_cloud():
    for pkg, forbidden in (("edge", "cloud"), ("cloud", "edge"), ("models", "edge"), ("models", "cloud")):
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            assert f"from {forbidden}" not in text and f"import {forbidden}" not in text, f"{path} imports {forbidden}"
