"""DAG parse time as Airflow measures it (DagBag's FileLoadStat), ours vs a hand-written peer;
and what the plugin (`plugins/`) changes in the dag-processor's work.

Part 1. Each sample is a fresh interpreter with Airflow already imported and the `airflow.*`
modules the file names pre-imported (as the dag-processor does before it forks a parse), then one
DagBag over a folder holding one DAG file. The peer is a static five-task TaskFlow DAG: the
floor for a file of that shape. Target: at most 50 ms per file for ours.

Part 2, in the same run. What a dag-processor's parse does (`airflow.dag_processing.processor.
_parse_file`): a DagBag over the DAG files (`load_op_links=False`) and `DagSerialization.to_dict`
of each DAG, for the shipped specs, in fresh processes with `AIRFLOW__CORE__PLUGINS_FOLDER` set to
`plugins/` or to an empty folder, alternating which goes first each round. Two settings:

- `lazy` (Airflow's default, `[core] lazy_load_plugins = True`): plugins load only when something
  asks for them; the bench reports whether parsing or serializing did (it should not: our DAGs
  use no plugin timetable, window or weight rule, and Airflow 3 resolves global operator extra
  links when a DAG is deserialized, in the api-server, not when it is serialized).
- `eager` (`lazy_load_plugins = False`, or any process that loads plugins before parsing): the
  plugins are loaded first (`plugins_manager.ensure_plugins_loaded()`, timed on its own; in the
  dag-processor that happens once, in the manager, before it forks the parses), then the same
  parse + serialization is timed.

    python bench/dag_parse.py [--samples 7] [--rounds 7]
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


# A dag-processor parse (processor._parse_file): DagBag without op links, then serialization.
MEASURE_PARSE = r"""
import json, sys, time
import importlib, pathlib
import airflow  # noqa: F401
from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.file import iter_airflow_imports
folder, mode = sys.argv[1], sys.argv[2]
for f in pathlib.Path(folder).glob("*.py"):
    for module in iter_airflow_imports(str(f)):
        importlib.import_module(module)
load_ms = None
if mode == "eager":
    t0 = time.perf_counter()
    plugins_manager.ensure_plugins_loaded()
    load_ms = (time.perf_counter() - t0) * 1000
loaded_before = plugins_manager._get_plugins.cache_info().currsize > 0
t0 = time.perf_counter()
bag = DagBag(folder, safe_mode=False, load_op_links=False)
t1 = time.perf_counter()
serialized = [DagSerialization.to_dict(dag) for dag in bag.dags.values()]
t2 = time.perf_counter()
assert not bag.import_errors, bag.import_errors
loaded = plugins_manager._get_plugins.cache_info().currsize > 0
plugins = [p.name for p in plugins_manager._get_plugins()[0]] if loaded else []
errors = plugins_manager.get_import_errors() if loaded else {}
assert not errors, errors
print(json.dumps({"parse_ms": (t1 - t0) * 1000, "serialize_ms": (t2 - t1) * 1000,
                  "load_ms": load_ms, "dags": len(serialized),
                  "loaded_by_parse": loaded and not loaded_before, "plugins": plugins}))
"""


def sample(folder: Path, env: dict[str, str], script: str = MEASURE, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script, str(folder), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def plugin_effect(rounds: int, env: dict[str, str], tmp_path: Path) -> None:
    """Part 2: parse + serialization of every shipped DAG file, plugins/ vs an empty folder."""
    dags = tmp_path / "all-dags"
    dags.mkdir()
    for f in sorted((ROOT / "dags").glob("*.py")):
        shutil.copy(f, dags)
    empty = tmp_path / "empty-plugins"
    empty.mkdir()
    folders = {"plugins/": ROOT / "plugins", "empty": empty}
    runs: dict[tuple[str, str], list[dict]] = {
        (mode, name): [] for mode in ("lazy", "eager") for name in folders
    }
    for n in range(rounds):
        for mode in ("lazy", "eager"):
            order = list(folders) if n % 2 == 0 else list(folders)[::-1]  # alternate who goes first
            for name in order:
                e = dict(env, AIRFLOW__CORE__PLUGINS_FOLDER=str(folders[name]))
                e["AIRFLOW__CORE__LAZY_LOAD_PLUGINS"] = "True"  # `eager` loads them explicitly
                runs[(mode, name)].append(sample(dags, e, MEASURE_PARSE, mode))
    first = runs[("lazy", "plugins/")][0]
    print(
        f"\nThe plugin and the dag-processor: parse + serialization of {first['dags']} DAGs "
        f"(dags/*.py, shipped specs), median of {rounds} fresh processes per row, alternating"
    )
    print(
        f"{'lazy_load_plugins':<18} {'plugins folder':<15} {'loaded':<38} {'load ms':>8} "
        f"{'parse ms':>9} {'serialize ms':>13} {'total ms':>9}"
    )
    totals: dict[tuple[str, str], float] = {}
    for (mode, name), samples in runs.items():
        med = {k: statistics.median(s[k] for s in samples) for k in ("parse_ms", "serialize_ms")}
        load = [s["load_ms"] for s in samples if s["load_ms"] is not None]
        by_parse = any(s["loaded_by_parse"] for s in samples)
        plugins = sorted({p for s in samples for p in s["plugins"]})
        loaded = (", ".join(plugins) or "none") + (" (by the parse)" if by_parse else "")
        totals[(mode, name)] = med["parse_ms"] + med["serialize_ms"]
        print(
            f"{mode:<18} {name:<15} {loaded:<38} "
            f"{(f'{statistics.median(load):.1f}' if load else '-'):>8} "
            f"{med['parse_ms']:>9.1f} {med['serialize_ms']:>13.1f} {totals[(mode, name)]:>9.1f}"
        )
    for mode in ("lazy", "eager"):
        with_p, without = totals[(mode, "plugins/")], totals[(mode, "empty")]
        print(
            f"{mode}: plugins/ vs empty: {with_p / without:.3f}x ({with_p - without:+.1f} ms per "
            f"parse of the {first['dags']} DAGs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of part 2 (the plugin)")
    parser.add_argument("--only-plugin", action="store_true", help="part 2 only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(tmp_path / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            RETRAINER_MODELS_DIR=str(ROOT / "models"),
            RETRAINER_HOME=str(tmp_path / "state"),
        )
        if not args.only_plugin:
            parse_times(args.samples, env, tmp_path)
        plugin_effect(args.rounds, env, tmp_path)


def parse_times(samples: int, env: dict[str, str], tmp_path: Path) -> None:
    """Part 1: each DAG file alone, DagBag's own FileLoadStat, against the peer."""
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
    results: dict[str, list[float]] = {label: [] for label in folders}
    meta: dict[str, tuple[int, int, list[str]]] = {}
    for _ in range(samples):  # interleaved, so machine noise hits all alike
        for label, folder in folders.items():
            data = sample(folder, env)
            _, seconds, dags, tasks = data["stats"][0]
            results[label].append(seconds * 1000)
            meta[label] = (dags, tasks, data["heavy"])
    specs = len(list((ROOT / "models").glob("*.yaml")))
    print(
        f"DAG file parse time (DagBag FileLoadStat), median of {samples} fresh processes, {specs} specs"
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
