"""PSI on 1,000,000 rows x 20 numeric features: Evidently vs retrainer, in one run.

Three contenders, each in a fresh process on the same generated data (seeded):

- peer: Evidently 0.7 `Report([DataDriftPreset(method="psi")])` on reference and current;
- retrainer `evidently` mode: Evidently's own PSI (Sturges bins over both, its empty-bin fill),
  reproduced; the values are checked against the peer's to 1e-9;
- retrainer `quantile` mode: the monitor's path, the current data against a reference profile
  built beforehand (as at training time) and loaded from its JSON.

Each prints wall time (median of --repeat runs for ours; Evidently once unless --peer-repeat)
and peak memory above the data already in memory (RSS sampled every 2 ms during the calls).

    python bench/drift.py [--rows 1000000] [--features 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(rows: int, features: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(20261123)
    ref, cur = {}, {}
    for j in range(features):
        kind = j % 4
        if kind == 0:
            r, c = rng.normal(0, 1, rows), rng.normal(0.05 * j, 1.0 + 0.02 * j, rows)
        elif kind == 1:
            r, c = rng.lognormal(3, 0.8, rows), rng.lognormal(3.1, 0.8, rows)
        elif kind == 2:
            r, c = rng.exponential(5, rows), rng.exponential(5, rows)
        else:
            r, c = rng.uniform(0, 100, rows).round(1), rng.uniform(10, 110, rows).round(1)
        if j % 5 == 0:  # some real missing values
            r[rng.random(rows) < 0.01] = np.nan
            c[rng.random(rows) < 0.02] = np.nan
        ref[f"f{j:02d}"], cur[f"f{j:02d}"] = r, c
    return pd.DataFrame(ref), pd.DataFrame(cur)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(method: str, rows: int, features: int, repeat: int) -> dict:
    import gc

    ref, cur = make_data(rows, features)
    cols = list(ref.columns)
    if method == "evidently-report":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        def run():
            definition = DataDefinition(numerical_columns=cols, categorical_columns=[])
            snap = Report([DataDriftPreset(method="psi")]).run(
                Dataset.from_pandas(cur, data_definition=definition),
                Dataset.from_pandas(ref, data_definition=definition),
            )
            return {
                m["config"]["column"]: float(m["value"])
                for m in snap.dict()["metrics"]
                if m["config"]["type"].endswith("ValueDrift")
            }
    elif method == "retrainer-evidently":
        from retrainer.core.drift import compare_frames

        def run():
            return compare_frames(ref, cur, cols, [], method="evidently").psi
    else:
        from retrainer.core.drift import ReferenceProfile, build_profile, compare_to_profile

        t = time.perf_counter()
        stored = build_profile(ref, cols, [], bins=10).to_json()  # training time, not timed below
        build_s = time.perf_counter() - t

        def run():
            profile = ReferenceProfile.from_dict(json.loads(stored))
            return compare_to_profile(profile, cur).psi

    import threading

    gc.collect()
    before = rss_bytes()
    peak_rss = [before]
    done = threading.Event()

    def sample() -> None:  # RSS every 2 ms: the peak above the data already in memory
        while not done.is_set():
            peak_rss[0] = max(peak_rss[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = []
    values: dict = {}
    for _ in range(repeat):
        t = time.perf_counter()
        values = run()
        times.append(time.perf_counter() - t)
    done.set()
    sampler.join()
    peak = peak_rss[0] - before
    out = {
        "method": method,
        "seconds": statistics.median(times),
        "all_seconds": times,
        "peak_mb": max(peak, 0) / 2**20,
        "data_mb": (ref.memory_usage().sum() + cur.memory_usage().sum()) / 2**20,
        "values": values,
    }
    if method == "retrainer-quantile":
        out["profile_build_seconds"] = build_s
    return out


def spawn(method: str, args: argparse.Namespace, repeat: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--rows",
        str(args.rows),
        "--features",
        str(args.features),
        "--repeat",
        str(repeat),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peer-repeat", type=int, default=1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.features, args.repeat)))
        return

    print(f"PSI, {args.rows:,} rows x {args.features} numeric features, reference and current")
    peer = spawn("evidently-report", args, args.peer_repeat)
    ours_ev = spawn("retrainer-evidently", args, args.repeat)
    ours_q = spawn("retrainer-quantile", args, args.repeat)

    diff = max(abs(peer["values"][k] - ours_ev["values"][k]) for k in peer["values"])
    print(f"\n{'contender':<44}{'seconds':>10}{'x Evidently':>13}{'peak MB':>10}")
    for label, r in [
        ("Evidently Report(DataDriftPreset(psi))", peer),
        ("retrainer evidently mode (same values)", ours_ev),
        ("retrainer quantile mode, stored profile", ours_q),
    ]:
        print(
            f"{label:<44}{r['seconds']:>10.3f}{peer['seconds'] / r['seconds']:>13.1f}{r['peak_mb']:>10.0f}"
        )
    print(f"\ninput data in memory: {peer['data_mb']:.0f} MB; peak MB is above that")
    print(
        f"largest |PSI difference| evidently mode vs Evidently over {len(peer['values'])} features: {diff:.2e}"
        f" ({'OK' if diff <= 1e-9 else 'MISMATCH'} at 1e-9)"
    )
    print(
        f"quantile-mode profile build (training time, once): {ours_q['profile_build_seconds']:.3f} s"
    )
    top = sorted(ours_q["values"].items(), key=lambda kv: -kv[1])[:3]
    print("quantile-mode top PSI: " + ", ".join(f"{k} {v:.3f}" for k, v in top))
    target = peer["seconds"] / ours_ev["seconds"] >= 50
    print(
        f"target: evidently mode at least 50x faster than Evidently: {'met' if target else 'NOT met'}"
    )
    if diff > 1e-9:
        sys.exit(1)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
