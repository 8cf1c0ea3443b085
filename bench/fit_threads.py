"""The credit_default fit on a shared worker: as many concurrent fits as task slots, with OpenMP
left to its default (a thread per core) vs capped by `Settings.task_threads` (cores / slots).

    python bench/fit_threads.py [--slots 2] [--repeat 2]

Each fit runs in its own process, as an Airflow task would; printed: the wall time of each fit and
the ratio, measured in the same run (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIT = """
import time, sys
from retrainer.spec import load_spec
from retrainer.stores.storage import read_table, resolve_source
from retrainer.config.settings import Settings
from retrainer.core.validation import feature_columns
from retrainer.core.training import fit_pipeline, split_frame
spec = load_spec("{root}/models/credit_default.yaml")
df = read_table(resolve_source(spec.data.train, Settings(models_dir="{root}/models")))
num, cat = feature_columns(spec, df)
train, _ = split_frame(df, spec)
t = time.perf_counter()
fit_pipeline(spec, train, num, cat, threads={threads})
print(time.perf_counter() - t)
"""


def fits(slots: int, threads: int | None) -> list[float]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(k, None)  # the default: OpenMP starts a thread per core
    code = FIT.format(root=ROOT, threads=threads)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(slots)
    ]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=2, help="concurrent tasks on the worker")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    capped = max(1, cores // args.slots)
    default, limited = [], []
    for _ in range(args.repeat):
        default += fits(args.slots, None)
        limited += fits(args.slots, capped)
        time.sleep(1)
    d, c = statistics.median(default), statistics.median(limited)
    print(f"{cores} cores, {args.slots} concurrent credit_default fits, {args.repeat} rounds")
    print(f"  OpenMP default (a thread per core): median fit {d:6.2f} s  {sorted(default)}")
    print(f"  task_threads = {capped}:              median fit {c:6.2f} s  {sorted(limited)}")
    print(f"  capped / default: {c / d:.2f}x the time")


if __name__ == "__main__":
    main()
