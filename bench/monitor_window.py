"""A monitor check's window on a large log: reading every row (before monitoring.max_rows) against
the bounded sample the check reads now, each in a fresh process, in one run.

The log is generated (seeded) as serving writes it: `--files` Parquet parts in day partitions,
`--rows` rows in all, 20 features (numeric and categorical) plus the meta columns serving adds.
Each contender is a whole child process timed from start to exit; its peak memory is the
kernel's accounting of that child (os.wait4's ru_maxrss) minus the same child's peak after its
imports (what is left is what reading the window cost):

- baseline: `read_log(..., arrived=True)`, every row of the window in one frame, then the
  champion's rows (what `read_window` did before the cap);
- retrainer: `log_files` then `sample_files(files, max_rows, seed, champion_rows)`, what
  `read_window` does now.

Prints rows read, wall time and peak memory of each, and their ratios.

    python bench/monitor_window.py [--rows 2000000] [--files 400] [--max-rows 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import resource, sys, time
from datetime import UTC, datetime
import pandas as pd, numpy as np, pyarrow.parquet
from retrainer.steps.monitor import window
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
root, mode, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
end = datetime.now(UTC)
t = time.perf_counter()
if mode == "baseline":
    df = window.champion_rows(window.read_log(root, "m", None, end, arrived=True))
    logged = len(df)
else:
    files = window.log_files(root, "m", None, end, arrived=True)
    df, logged = window.sample_files(files, cap, 1, window.champion_rows)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(df), logged, f"{wall:.3f}", (peak - base) * 1024)
"""


def make_log(root: Path, rows: int, files: int) -> int:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(20261206)
    per = rows // files
    day0 = datetime.now(UTC) - timedelta(days=20)
    written = 0
    for n in range(files):
        day = (day0 + timedelta(days=n * 14 // files)).date().isoformat()
        frame = pd.DataFrame(
            {
                **{f"num{j}": rng.normal(j, 1 + j / 10, per) for j in range(14)},
                **{
                    f"cat{j}": rng.choice(["own", "rent", "free", "other", "n/a"], per)
                    for j in range(6)
                },
                "_request_id": [f"{n:08x}{k:016x}" for k in range(per)],
                "_client_request_id": None,
                "_row": np.arange(per),
                "_ts": datetime.now(UTC).isoformat(),
                "_model_version": "3",
                "_prediction": rng.integers(0, 2, per),
                "_score": rng.random(per),
                "_role": "champion",
            }
        )
        folder = root / "m" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / f"part-{n:05d}.parquet")
        written += per
    return written


def run(root: Path, mode: str, cap: int) -> tuple[int, int, float, int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), mode, str(cap)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{mode} failed ({status})")
    rows, logged, wall, peak = out.split()
    return int(rows), int(logged), float(wall), int(peak), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--max-rows", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        written = make_log(root, args.rows, args.files)
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        print(
            f"log: {written:,} rows in {args.files} files over 14 days, {size / 1e6:.0f} MB "
            f"of Parquet; max_rows {args.max_rows:,}"
        )
        results = {m: run(root, m, args.max_rows) for m in ("baseline", "retrainer")}
    for mode, (rows, logged, wall, peak, whole) in results.items():
        print(
            f"{mode:<10} {rows:>10,} rows read of {logged:,}: reading {wall:6.2f} s "
            f"(process {whole:5.1f} s), peak memory for the window {peak / 1e6:7.0f} MB"
        )
    b, r = results["baseline"], results["retrainer"]
    print(
        f"sample vs every row: peak memory {r[3] / b[3]:.3f}x ({b[3] / r[3]:.1f}x less), "
        f"reading time {r[2] / b[2]:.2f}x"
    )


if __name__ == "__main__":
    main()
