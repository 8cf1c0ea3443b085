"""Serving throughput and latency: `retrainer serve` vs `mlflow models serve`, same model, same run;
and retrainer with its durable inference log vs without any log.

Registers the credit_default model (HistGradientBoosting) in a throw-away state folder, starts
both servers on loopback, and drives each with wrk (Debian's package) at 16 connections with the
same single-row MLflow payload on /invocations. Then checks that both answer 200 different rows
identically. Then the durable log's cost: retrainer serve with the log (every micro-batch
spooled before it is answered) and with RETRAINER_SERVING_LOG_ENABLED=false, in alternating
rounds (the median of each is compared). Last, a sustained load on retrainer's server to see
whether its memory (the inference log included) stays bounded.

Then the shadow's cost the same way: the champion alone, with a shadow of 10% of the requests and
of all of them (`--only shadow` runs this part alone).

    python bench/serving.py [--seconds 20] [--log-rounds 3] [--shadow-rounds 3] [--soak 180]
                            [--only all|shadow]
Targets: >= 10x the throughput of mlflow models serve and <= 1/5 of its p99; the durable log
costs at most 1 ms of p99 and keeps at least 90% of the throughput; so does a 10% shadow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from retrainer.config.environment import process_environment

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "credit_default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def stop_with_children(proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Stop a server and wait for its children too: each log's compaction process writes what
    is left on the way out (seconds of CPU), which would otherwise slow the next variant down."""
    kids = children(proc.pid)
    proc.terminate()
    proc.wait(timeout=60)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{k}").exists() for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(x) for x in out]
    return kids + [g for k in kids for g in children(k)]


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, body: str, seconds: int, connections: int = 16) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("NON2XX %d\\n", summary.errors.status))\n'
            "end\n"
        )
        script = fh.name
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script)

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNIT[m.group(2)] if m else float("nan")

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"NON2XX (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "rps": rps,
        "p50": latency("50"),
        "p99": latency("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": float(sum(int(g) for g in socket_errors.groups()))
        if socket_errors
        else 0.0,
    }


def register(home: Path) -> dict[str, str]:
    """Train and register credit_default v1 in a fresh state folder; return the environment."""
    from retrainer.config.settings import Settings

    settings = Settings(home=home, models_dir=ROOT / "models")
    env = dict(
        os.environ, **process_environment(settings), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"
    )
    code = (
        "from retrainer.steps import retrain as pipeline\n"
        "from retrainer.config.settings import RunContext, get_settings\n"
        "from retrainer.spec import load_spec\n"
        f"spec = load_spec({str(ROOT / 'models' / (MODEL + '.yaml'))!r})\n"
        "ctx = RunContext(dag_id=spec.retrain_dag_id, run_id='bench')\n"
        "v = pipeline.validate_data(spec, ctx)\n"
        "t = pipeline.train_candidate(spec, ctx, v)\n"
        "g = pipeline.gate_candidate(spec, ctx, pipeline.evaluate_candidate(spec, ctx, t))\n"
        "print(pipeline.register_candidate(spec, ctx, g))\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20, help="wrk duration per server")
    parser.add_argument(
        "--soak", type=int, default=180, help="sustained load on retrainer (memory)"
    )
    parser.add_argument(
        "--log-rounds", type=int, default=3, help="alternating rounds, log on / log off"
    )
    parser.add_argument(
        "--shadow-rounds", type=int, default=3, help="alternating rounds, shadow off / 0.1 / 1.0"
    )
    parser.add_argument(
        "--only", choices=("all", "shadow"), default="all", help="shadow: only the shadow's cost"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")

    home = Path(tempfile.mkdtemp(prefix="retrainer-bench-"))
    print("registering credit_default v1 (HistGradientBoosting, 13 features) ...", flush=True)
    env = register(home / "state")
    import pandas as pd

    data = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv").dropna()
    feats = [c for c in data.columns if c != "Status"]
    num = ["Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"]
    data[num] = data[num].astype(float)  # the signature's types (double)
    row = data.iloc[0]
    body = json.dumps(
        {"dataframe_split": {"columns": feats, "data": [[row[c] for c in feats]]}}, default=float
    )
    if args.only == "shadow":
        try:
            shadow_cost(env, body, args.seconds, args.shadow_rounds, home)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        return

    ours_port, mlflow_port = free_port(), free_port()
    ours = subprocess.Popen(
        [str(BIN / "retrainer"), "serve", "--model", MODEL, "--port", str(ours_port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peer = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/1",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ours_url, peer_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{mlflow_port}"
        wait_until_up(f"{ours_url}/ready", ours)
        wait_until_up(f"{peer_url}/ping", peer)

        # Same answers: 200 different rows, one request each, to both.
        mismatches = 0
        sample = data.sample(200, random_state=1)
        with httpx.Client(timeout=30) as client:
            for _, r in sample.iterrows():
                payload = {"dataframe_split": {"columns": feats, "data": [[r[c] for c in feats]]}}
                a = client.post(
                    f"{ours_url}/invocations",
                    content=json.dumps(payload, default=float),
                    headers={"content-type": "application/json"},
                ).json()["predictions"]
                b = client.post(
                    f"{peer_url}/invocations",
                    content=json.dumps(payload, default=float),
                    headers={"content-type": "application/json"},
                ).json()["predictions"]
                mismatches += a != b
        # The signature check is on: a wrong type is refused by ours.
        bad = json.loads(body)
        bad["dataframe_split"]["data"][0][feats.index("Age")] = "old"
        refused = httpx.post(f"{ours_url}/invocations", json=bad).status_code

        for url in (ours_url, peer_url):  # warm both
            wrk(f"{url}/invocations", body, 3)
        results = {}
        results["mlflow models serve"] = wrk(f"{peer_url}/invocations", body, args.seconds)
        results["retrainer serve"] = wrk(f"{ours_url}/invocations", body, args.seconds)

        print(
            f"\nsingle-row /invocations, 16 connections, {args.seconds} s each (wrk), same model v1\n"
        )
        print(
            f"{'server':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'sock err':>8}"
        )
        for name, r in results.items():
            print(
                f"{name:<22} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8.0f} {r['socket_errors']:>8.0f}"
            )
        o, p = results["retrainer serve"], results["mlflow models serve"]
        print(f"\nthroughput ratio retrainer/mlflow: {o['rps'] / p['rps']:.1f}x  (target >= 10x)")
        print(f"p99 ratio retrainer/mlflow:        {o['p99'] / p['p99']:.3f}  (target <= 0.2)")
        print(
            f"identical predictions on 200 rows: {'yes' if mismatches == 0 else f'NO, {mismatches} differ'}"
        )
        print(f"signature check kept: wrong type answered {refused}")

        ours.terminate()
        ours.wait(timeout=60)
        append_cost(home, {c: (float(row[c]) if c in num else str(row[c])) for c in feats})
        log_cost(env, body, args.seconds, args.log_rounds, home)
        shadow_cost(env, body, args.seconds, args.shadow_rounds, home)
        ours = subprocess.Popen(
            [str(BIN / "retrainer"), "serve", "--model", MODEL, "--port", str(ours_port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(f"{ours_url}/ready", ours)

        if args.soak > 0:
            before = rss_mb(ours.pid)
            soak = wrk(f"{ours_url}/invocations", body, args.soak)
            time.sleep(7)  # let the inference log flush
            after = rss_mb(ours.pid)
            requests = soak["rps"] * args.soak
            logged = sum(
                len(pd.read_parquet(f))
                for f in (home / "state" / "inference_log" / MODEL).rglob("*.parquet")
            )
            print(
                f"\nsoak: {args.soak} s at 16 connections, {requests:,.0f} requests, {soak['non2xx']:.0f} non-2xx"
            )
            print(
                f"retrainer serve RSS before {before:.0f} MB, after {after:.0f} MB "
                f"({(after - before) * 1024 * 1024 / max(requests, 1):.1f} bytes per request)"
            )
            print(f"inference log rows on disk: {logged:,}")
    finally:
        for proc in (ours, peer):
            proc.terminate()
        for proc in (ours, peer):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(home, ignore_errors=True)


def append_cost(home: Path, row: dict[str, object]) -> None:
    """The spool's own cost on the response path: one append per micro-batch, timed in-process
    (robust to a loaded machine, unlike end-to-end figures)."""
    import statistics

    from retrainer.serving.durable_log import DurableLog, now_iso

    log = DurableLog(str(home / "append-bench"), "requests", home / "append-spool")
    log.open()
    schema = [(k, "double" if isinstance(v, float) else "string") for k, v in row.items()]
    print("\nspool append per micro-batch (in-process, 2,000 appends each):")
    for n in (1, 16, 64):
        recs = [
            dict(row, _request_id="0123456789abcdef-1-0123456789abcdef", _row=i, _ts=now_iso())
            for i in range(n)
        ]
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            log.append(MODEL, "1", schema, recs)
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        print(
            f"  {n:>3} rows: median {statistics.median(times):6.1f} us, "
            f"p99 {times[int(len(times) * 0.99)]:7.1f} us"
        )
    log.close()


Variant = tuple[dict[str, str], Callable[[str], None] | None]


def alternate(
    env: dict[str, str],
    body: str,
    seconds: int,
    rounds: int,
    home: Path,
    variants: dict[str, Variant],
) -> dict[str, dict[str, float]]:
    """Each variant (extra environment, a set-up call on the live URL) served by a fresh
    `retrainer serve` and loaded by wrk, in alternating rounds; the median of each figure."""
    import statistics

    runs: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    for r in range(rounds):
        for i, (label, (extra, setup)) in enumerate(variants.items()):
            port = free_port()
            proc = subprocess.Popen(
                [str(BIN / "retrainer"), "serve", "--model", MODEL, "--port", str(port)],
                env=dict(env, RETRAINER_SERVING_SPOOL_DIR=str(home / f"spool-{i}-{r}"), **extra),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until_up(f"{url}/ready", proc)
                if setup is not None:
                    setup(url)
                # The same settling time for every variant: each log's compaction process starts
                # in the background after /ready (a spawn importing pyarrow: seconds of CPU).
                time.sleep(8)
                wrk(f"{url}/invocations", body, 3)  # warm
                kids = children(proc.pid)
                before = cpu_seconds([proc.pid]), cpu_seconds(kids)
                run = wrk(f"{url}/invocations", body, seconds)
                done = run["rps"] * seconds
                run["cpu"] = (cpu_seconds([proc.pid]) - before[0]) * 1000 / done
                run["kids_cpu"] = (cpu_seconds(kids) - before[1]) * 1000 / done
                runs[label].append(run)
            finally:
                stop_with_children(proc)
    for label, rs in runs.items():
        print(
            f"rounds, {label}: "
            + ", ".join(f"{x['rps']:.0f} req/s p99 {x['p99']:.2f} ms" for x in rs)
        )
    return {
        label: {
            k: statistics.median(x[k] for x in rs)
            for k in ("rps", "p50", "p99", "non2xx", "cpu", "kids_cpu")
        }
        for label, rs in runs.items()
    }


def print_medians(title: str, med: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}\n")
    print(
        f"{'retrainer serve':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
        f" {'CPU ms/req':>11} {'children':>9}"
    )
    for label, m in med.items():
        print(
            f"{label:<22} {m['rps']:>9.0f} {m['p50']:>8.2f} {m['p99']:>8.2f} {m['non2xx']:>8.0f}"
            f" {m['cpu']:>11.3f} {m['kids_cpu']:>9.3f}"
        )
    print(
        "(CPU ms/req: the serving process's user + system CPU per answered request; children:"
        " its child processes', the logs' compaction and the shadow's scoring)"
    )


def log_cost(env: dict[str, str], body: str, seconds: int, rounds: int, home: Path) -> None:
    """Throughput and p99 with the durable log and without any log, alternating rounds."""
    med = alternate(
        env,
        body,
        seconds,
        rounds,
        home,
        {
            "durable log": ({"RETRAINER_SERVING_LOG_ENABLED": "true"}, None),
            "no log": ({"RETRAINER_SERVING_LOG_ENABLED": "false"}, None),
        },
    )
    print_medians(
        f"the durable log's cost: single-row /invocations, 16 connections, {rounds} alternating "
        f"rounds of {seconds} s each (median)",
        med,
    )
    on, off = med["durable log"], med["no log"]
    print(f"\nthroughput kept with the durable log: {on['rps'] / off['rps']:.1%}  (target >= 90%)")
    print(
        f"p99 added by the durable log:        {on['p99'] - off['p99']:+.2f} ms  (target <= 1 ms)"
    )


def shadow_cost(env: dict[str, str], body: str, seconds: int, rounds: int, home: Path) -> None:
    """The champion alone vs with a shadow at 10% and at 100% of the requests, alternating rounds.

    The challenger is the same registered version (an A/A shadow): the mirrored rows cost their
    pickling to the shadow's process (which predicts a quarter second of them per call, and
    times both versions on a share of those batches) and one shadow-log append per batch."""
    from retrainer.config.secrets import serving_admin_token
    from retrainer.config.settings import Settings

    token = serving_admin_token(Settings(home=home / "state", models_dir=ROOT / "models"))

    def shadow(fraction: float) -> Variant:
        def setup(url: str) -> None:
            r = httpx.put(
                f"{url}/models/{MODEL}/rollout",
                json={"challenger": "1", "mode": "shadow", "fraction": fraction},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            r.raise_for_status()

        return {}, setup

    med = alternate(
        env,
        body,
        seconds,
        rounds,
        home,
        {"champion alone": ({}, None), "shadow 0.1": shadow(0.1), "shadow 1.0": shadow(1.0)},
    )
    print_medians(
        f"the shadow's cost: single-row /invocations, 16 connections, {rounds} alternating "
        f"rounds of {seconds} s each (median)",
        med,
    )
    alone = med["champion alone"]
    for label, target in (("shadow 0.1", "  (target >= 90%, <= 1 ms)"), ("shadow 1.0", "")):
        m = med[label]
        print(
            f"{label}: throughput kept {m['rps'] / alone['rps']:.1%}, "
            f"p99 added {m['p99'] - alone['p99']:+.2f} ms{target}; CPU per request: serving "
            f"{m['cpu'] - alone['cpu']:+.3f} ms ({m['cpu'] / alone['cpu'] - 1:+.1%}), its child "
            f"processes {m['kids_cpu'] - alone['kids_cpu']:+.3f} ms"
        )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
