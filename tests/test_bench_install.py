"""``twin bench`` works from a non-editable install, run from another directory: no checkout on the path, no
``tests/`` tree (the benchmarks used to import ``tests.harness``), figures written under the working directory
rather than into site-packages.

The wheel is built from a copy of this working tree (pip's isolated build: pyproject's setuptools, from pip's cache
after the first run) and installed with ``--no-deps`` into a fresh venv; the
dependencies come from the development venv through a ``.pth`` line (no download, a few seconds), so what is under
test is the installed copy of our packages alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cloud", "edge", "models", "simulators", "twin")


def _run(argv: list[str], cwd: Path, timeout: float = 240, **kw) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TWIN_BENCH_DOCS")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with this tree's wheel installed (not editable); its ``bin`` directory."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_aot"))
    # Built as pip builds it for a user (an isolated build env with pyproject's setuptools, from pip's cache).
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(src)],
                 cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("assettwin-*.whl")
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], cwd=work)
    assert made.returncode == 0, made.stderr
    python = work / "venv" / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                      "--no-index", str(wheel)], cwd=work)
    assert installed.returncode == 0, installed.stderr
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work).stdout.strip())
    (site / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return work / "venv" / "bin"


def test_the_install_has_our_packages_and_no_checkout(venv, tmp_path):
    probe = ("import importlib.util, json, twin, simulators.rig, cloud.shipments; "
             "print(json.dumps({'twin': twin.__file__, 'rig': simulators.rig.__file__, "
             "'tests': importlib.util.find_spec('tests') is not None, "
             "'scenario': importlib.util.find_spec('simulators').submodule_search_locations[0]}))")
    out = _run([str(venv / "python"), "-c", probe], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where = json.loads(out.stdout)
    site = str(venv.parent / "lib")
    assert where["twin"].startswith(site) and where["rig"].startswith(site) and not where["tests"]
    assert (Path(where["scenario"]) / "scenarios" / "trailer-faults.yaml").is_file()  # package data


def test_twin_bench_help_from_an_install(venv, tmp_path):
    out = _run([str(venv / "twin"), "bench", "detectors", "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Detector speed on one core" in out.stdout


def test_a_bench_on_real_servers_runs_from_an_install(venv, tmp_path):
    """``twin bench fleet`` starts Mosquitto through the rig and records its figures under ``./docs``."""
    out = _run([str(venv / "twin"), "bench", "fleet", "--devices", "20", "--rate", "2", "--duration", "1",
                "--connections", "2", "--json", "fleet.json"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads((tmp_path / "fleet.json").read_text())["figures"]
    assert figures["devices"] == 20 and figures["connections"] == 2 and figures["dropped"] == 0
    assert figures["sent"] == figures["acked"] >= 20
    recorded = json.loads((tmp_path / "docs" / "bench" / "fleet.json").read_text())
    assert recorded["command"] == "twin bench fleet --devices 20 --rate 2 --duration 1 --connections 2 --json " \
                                  "fleet.json"
    assert "## Simulated fleet load against Mosquitto" in (tmp_path / "docs" / "benchmarks.md").read_text()
    assert not (venv.parent / "lib" / "docs").exists() and not list(venv.parent.glob("lib/python*/site-packages/docs"))
