"""PSI on 1,000,000 rows x 20 numeric features: Evidently vs retrainer, in one run.

End to end, as users run it (files in, report out; each a whole process, timed from start to
exit, peak memory from the kernel's accounting of that child, os.wait4's ru_maxrss): two
Parquet files of the generated data (seeded), then

- peer: a script that reads both files with pandas and runs Evidently 0.7's
  `Report([DataDriftPreset(method="psi")])`, printing each column's PSI;
- `retrainer drift -r REF -c CUR --json` (quantile bins, the monitor's PSI) and with
  `--method evidently` (Evidently's own PSI, checked against the peer's values to 1e-9).

The issue's target: `retrainer drift` at least 20x faster than the peer script, with peak
memory at most 1.5x the two files' size.

In process (the PSI computation alone, data already in memory), three contenders, each in a
fresh process on the same generated data:

- peer: Evidently 0.7 `Report([DataDriftPreset(method="psi")])` on reference and current;
- retrainer `evidently` mode: Evidently's own PSI (Sturges bins over both, its empty-bin fill),
  reproduced; the values are checked against the peer's to 1e-9;
- retrainer `quantile` mode: the monitor's path, the current data against a reference profile
  built beforehand (as at training time) and loaded from its JSON.

Each prints wall time (median of --repeat runs for ours; Evidently once unless --peer-repeat)
and peak memory above the data already in memory (RSS sampled every 2 ms during the calls).

    python bench/drift.py [--rows 1000000] [--features 20] [--repeat 5] [--only end-to-end]
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


PEER_SCRIPT = """
import json, sys
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
cols = [c for c in ref.columns if c in cur.columns]
definition = DataDefinition(numerical_columns=cols, categorical_columns=[])
snap = Report([DataDriftPreset(method="psi")]).run(
    Dataset.from_pandas(cur, data_definition=definition),
    Dataset.from_pandas(ref, data_definition=definition),
)
print(json.dumps({m["config"]["column"]: float(m["value"]) for m in snap.dict()["metrics"]
                  if m["config"]["type"].endswith("ValueDrift")}))
"""


def timed_process(cmd: list[str]) -> dict:
    """Run a whole process: wall seconds, CPU seconds, peak RSS (MB) of that child, stdout."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode not in (0, 3):  # retrainer drift: 3 is the verdict retrain
        sys.exit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
        "stdout": stdout,
    }


def end_to_end(args: argparse.Namespace) -> None:
    import tempfile

    if not args.files:
        with tempfile.TemporaryDirectory(prefix="retrainer-drift-bench-") as tmp:
            return end_to_end(argparse.Namespace(**{**vars(args), "files": tmp}))
    folder = Path(args.files)
    ref_path, cur_path = folder / "reference.parquet", folder / "current.parquet"
    if not (ref_path.exists() and cur_path.exists()):
        # in a child: a forked child's peak memory counts its parent's pages before exec, so
        # this process stays small (its own RSS is printed: the floor of every peak below)
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                "make-files",
                "--files",
                str(folder),
                "--rows",
                str(args.rows),
                "--features",
                str(args.features),
            ],
            check=True,
        )
    files_mb = (ref_path.stat().st_size + cur_path.stat().st_size) / 2**20
    retrainer = str(Path(sys.executable).with_name("retrainer"))
    ours_cmd = [retrainer, "drift", "-r", str(ref_path), "-c", str(cur_path), "--json"]
    print(
        f"\nEnd to end: two Parquet files of {args.rows:,} rows x {args.features} numeric "
        f"features ({files_mb:.0f} MB together), each contender a whole process"
    )
    peer_runs = [
        timed_process([sys.executable, "-c", PEER_SCRIPT, str(ref_path), str(cur_path)])
        for _ in range(args.peer_repeat)
    ]
    contenders = {
        "retrainer drift (quantile, the monitor's PSI)": ours_cmd,
        "retrainer drift --method evidently": [*ours_cmd, "--method", "evidently"],
    }
    runs = {k: [timed_process(cmd) for _ in range(args.repeat)] for k, cmd in contenders.items()}

    def median(rs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    peer_s, peer_cpu = median(peer_runs, "seconds"), median(peer_runs, "cpu_seconds")
    peer_values = json.loads(peer_runs[-1]["stdout"].strip().splitlines()[-1])
    print(
        f"{'contender':<48}{'wall s':>8}{'x peer':>8}{'CPU s':>8}{'x peer':>8}"
        f"{'peak MB':>9}{'x files':>9}"
    )
    rows = [("Evidently script (pandas + Report psi)", peer_runs), *runs.items()]
    for label, rs in rows:
        wall, cpu, peak = (
            median(rs, "seconds"),
            median(rs, "cpu_seconds"),
            max(r["peak_mb"] for r in rs),
        )
        print(
            f"{label:<48}{wall:>8.2f}{peer_s / wall:>8.1f}{cpu:>8.2f}{peer_cpu / cpu:>8.1f}"
            f"{peak:>9.0f}{peak / files_mb:>9.2f}"
        )
    ev = json.loads(runs["retrainer drift --method evidently"][-1]["stdout"])
    diff = max(abs(peer_values[k] - ev["features"][k]["psi"]) for k in peer_values)
    print(
        f"largest |PSI difference| --method evidently vs the peer over {len(peer_values)} "
        f"features: {diff:.2e} ({'OK' if diff <= 1e-9 else 'MISMATCH'} at 1e-9)"
    )
    q = runs["retrainer drift (quantile, the monitor's PSI)"]
    speed = peer_s / median(q, "seconds")
    peak = max(r["peak_mb"] for r in q) / files_mb
    print(f"this harness's own RSS when it starts each contender: {rss_bytes() / 2**20:.0f} MB")
    print(
        f"wall times (s): peer {[round(r['seconds'], 2) for r in peer_runs]}, retrainer drift "
        f"{[round(r['seconds'], 2) for r in q]}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"target: retrainer drift >= 20x faster than the Evidently script: {speed:.1f}x "
        f"({'met' if speed >= 20 else 'NOT met'}); peak memory <= 1.5x the files: {peak:.2f}x "
        f"({'met' if peak <= 1.5 else 'NOT met'})"
    )
    if diff > 1e-9:
        sys.exit(1)


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
    ap.add_argument("--files", help="folder for the two Parquet files (default: a new temp folder)")
    ap.add_argument("--only", choices=["end-to-end", "in-process"])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "make-files":
        ref, cur = make_data(args.rows, args.features)
        ref.to_parquet(Path(args.files) / "reference.parquet")
        cur.to_parquet(Path(args.files) / "current.parquet")
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.features, args.repeat)))
        return
    if args.only != "in-process":
        end_to_end(args)
    if args.only == "end-to-end":
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
