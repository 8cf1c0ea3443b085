"""Split the credit data into the demo's two populations, from real rows (deterministic).

    python examples/credit/populations.py

- batches/base.csv: the base population the first model is trained on (the spec's training
  folder, `data.train: examples/credit/batches`; labelled batches that land there are used by
  the next retrain).
- traffic/base.csv: more rows of the base population, replayed to the serving API as traffic
  that should not alarm the monitor.
- traffic/shifted.csv: the shifted population: applicants aged 40 or more asking for 1,000 or
  more (the user base gets older and asks for larger amounts). The demo replays it as traffic
  and lands it, labelled, in batches/ as a new batch.
"""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
SHIFT_MIN_AGE = 40
SHIFT_MIN_AMOUNT = 1000
BASE_TRAFFIC_ROWS = 600


def main() -> None:
    df = pd.read_csv(HERE / "credit_data.csv")
    shifted = (df["Age"] >= SHIFT_MIN_AGE) & (df["Amount"] >= SHIFT_MIN_AMOUNT)
    base = df[~shifted]
    traffic = base.sample(BASE_TRAFFIC_ROWS, random_state=7)
    (HERE / "batches").mkdir(exist_ok=True)
    (HERE / "traffic").mkdir(exist_ok=True)
    base.drop(traffic.index).to_csv(HERE / "batches" / "base.csv", index=False)
    traffic.to_csv(HERE / "traffic" / "base.csv", index=False)
    df[shifted].to_csv(HERE / "traffic" / "shifted.csv", index=False)
    print(
        f"base: {len(base) - len(traffic)} training rows, {len(traffic)} traffic rows; shifted: {int(shifted.sum())} rows"
    )


if __name__ == "__main__":
    main()
