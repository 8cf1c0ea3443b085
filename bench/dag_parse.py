"""DAG parse time as Airflow measures it (DagBag's FileLoadStat), ours vs a hand-written peer.

Each sample is a fresh interpreter with Airflow already imported and the `airflow.*` modules the
file names pre-imported (as the dag-processor does before it forks a parse), then one DagBag over
a folder holding one DAG file. The peer is a static five-task TaskFlow DAG: the
floor for a file of that shape. Target: at most 50 ms per file for ours.

    python bench/dag_parse.py [--samples 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_LABEL = "peer: static 5-task DAG"

PEER = """
from datetime import datetime
from airflow.sdk import dag, task

@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["peer"])
def peer_retrain():
    @task
    def validate_data(): return {}
    @task
    def train_candidate(x): return x
    @task
    def evaluate_candidate(x): return x
    @task
    def gate(x): return x
    @task
    def register_candidate(x): return x
    register_candidate(gate(evaluate_candidate(train_candidate(validate_data()))))

peer_retrain()
"""

MEASURE = r"""
import json, sys
import importlib, pathlib
import airflow  # noqa: F401  (Airflow itself is already imported when a file is parsed)
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports
# As the dag-processor does before it forks a parse: pre-import the airflow modules a file names.
for f in pathlib.Path(sys.argv[1]).glob("*.py"):
    for module in iter_airflow_imports(str(f)):
        importlib.import_module(module)
before = set(sys.modules)
bag = DagBag(sys.argv[1], safe_mode=False)
assert not bag.import_errors, bag.import_errors
heavy = sorted(m for m in set(sys.modules) - before
               if m.split(".")[0] in {"mlflow", "sklearn", "pandas", "great_expectations", "evidently", "boto3"})
print(json.dumps({"stats": [[s.file, s.duration.total_seconds(), s.dag_num, s.task_num] for s in bag.dagbag_stats],
                  "heavy": heavy}))
"""


def sample(folder: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        files = sorted((ROOT / "dags").glob("*.py"))
        folders: dict[str, Path] = {}
        for f in files:  # one folder per DAG file: each is parsed alone, as the dag-processor does
            folders[f"dags/{f.name}"] = tmp_path / f.stem
            folders[f"dags/{f.name}"].mkdir()
            shutil.copy(f, folders[f"dags/{f.name}"])
        peer = tmp_path / "peer"
        peer.mkdir()
        (peer / "peer_dag.py").write_text(PEER)
        folders[PEER_LABEL] = peer
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(tmp_path / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            RETRAINER_MODELS_DIR=str(ROOT / "models"),
            RETRAINER_HOME=str(tmp_path / "state"),
        )
        results: dict[str, list[float]] = {label: [] for label in folders}
        meta: dict[str, tuple[int, int, list[str]]] = {}
        for _ in range(args.samples):  # interleaved, so machine noise hits all alike
            for label, folder in folders.items():
                data = sample(folder, env)
                _, seconds, dags, tasks = data["stats"][0]
                results[label].append(seconds * 1000)
                meta[label] = (dags, tasks, data["heavy"])
    specs = len(list((ROOT / "models").glob("*.yaml")))
    print(
        f"DAG file parse time (DagBag FileLoadStat), median of {args.samples} fresh processes, {specs} specs"
    )
    print(
        f"{'file':<26} {'DAGs':>5} {'tasks':>6} {'median ms':>10} {'min ms':>8} {'vs peer':>8}  heavy imports"
    )
    peer_median = statistics.median(results[PEER_LABEL])
    worst = 0.0
    for label, values in results.items():
        dags, tasks, heavy = meta[label]
        median = statistics.median(values)
        if label != PEER_LABEL:
            worst = max(worst, median)
        print(
            f"{label:<26} {dags:>5} {tasks:>6} {median:>10.1f} {min(values):>8.1f} "
            f"{median / peer_median:>7.2f}x  {heavy or 'none'}"
        )
    verdict = "OK" if worst <= 50 else "OVER"
    print(f"\ntarget: <= 50 ms per file; slowest of ours {worst:.1f} ms -> {verdict}")


if __name__ == "__main__":
    main()
