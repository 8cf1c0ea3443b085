"""DAG parse time as Airflow measures it (DagBag's FileLoadStat), ours vs a hand-written peer.

Each sample is a fresh interpreter with Airflow already imported (as in the dag-processor), then
one DagBag over a folder holding one DAG file. The peer is a static five-task TaskFlow DAG: the
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
import airflow  # noqa: F401  (Airflow itself is already imported when a file is parsed)
from airflow.dag_processing.dagbag import DagBag
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
        ours, peer = tmp_path / "ours", tmp_path / "peer"
        ours.mkdir()
        peer.mkdir()
        shutil.copy(ROOT / "dags" / "retrainer_dags.py", ours)
        (peer / "peer_dag.py").write_text(PEER)
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(tmp_path / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            RETRAINER_MODELS_DIR=str(ROOT / "models"),
            RETRAINER_HOME=str(tmp_path / "state"),
        )
        results: dict[str, list[float]] = {"ours": [], "peer": []}
        meta: dict[str, tuple[int, int, list[str]]] = {}
        for _ in range(args.samples):  # interleaved, so machine noise hits both alike
            for label, folder in (("ours", ours), ("peer", peer)):
                data = sample(folder, env)
                file, seconds, dags, tasks = data["stats"][0]
                results[label].append(seconds * 1000)
                meta[label] = (dags, tasks, data["heavy"])
    print(f"DAG file parse time (DagBag FileLoadStat), median of {args.samples} fresh processes")
    print(
        f"{'file':<28} {'DAGs':>5} {'tasks':>6} {'median ms':>10} {'min ms':>8}  heavy modules imported"
    )
    for label, name in (("ours", "dags/retrainer_dags.py"), ("peer", "peer: static 5-task DAG")):
        dags, tasks, heavy = meta[label]
        values = results[label]
        print(
            f"{name:<28} {dags:>5} {tasks:>6} {statistics.median(values):>10.1f} {min(values):>8.1f}  {heavy or 'none'}"
        )
    ratio = statistics.median(results["ours"]) / statistics.median(results["peer"])
    per_dag = statistics.median(results["ours"]) / max(meta["ours"][0], 1)
    print(
        f"\nratio ours/peer: {ratio:.2f}x  (ours builds {meta['ours'][0]} DAGs from YAML specs; "
        f"{per_dag:.1f} ms per DAG)"
    )
    verdict = "OK" if statistics.median(results["ours"]) <= 50 else "OVER"
    print(f"target: <= 50 ms per file -> {verdict}")


if __name__ == "__main__":
    main()
