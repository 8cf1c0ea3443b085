"""The layer contract (pyproject's [tool.importlinter]) holds on the code, and it has teeth: the
same contract fails on a copy of the package that gains an upward import."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(project: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(project / "src"))
    return subprocess.run(
        [LINT, "--config", str(project / "pyproject.toml"), "--no-cache"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    module.write_text(head + sep + line + "\n" + rest)


def test_contract_holds_on_the_code():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    project = copy_project(tmp_path)
    add_import(project / "src/retrainer/core/gate.py", "from retrainer.stores import registry")
    result = lint(project)
    assert result.returncode != 0
    assert "Layers point down" in result.stdout and "BROKEN" in result.stdout
    assert "retrainer.core.gate -> retrainer.stores.registry" in result.stdout


def test_airflow_outside_orchestration_breaks_the_contract(tmp_path):
    project = copy_project(tmp_path)
    add_import(project / "src/retrainer/steps/deploy.py", "import airflow.sdk")
    result = lint(project)
    assert result.returncode != 0
    assert "Only orchestration imports airflow BROKEN" in " ".join(result.stdout.split())


def test_mlflow_in_core_breaks_the_contract(tmp_path):
    project = copy_project(tmp_path)
    add_import(project / "src/retrainer/core/drift.py", "import mlflow")
    result = lint(project)
    assert result.returncode != 0
    assert "core is pure: no MLflow, boto3 or Airflow BROKEN" in " ".join(result.stdout.split())
