"""Cross-check retrainer's label-free estimate (core/cbpe.py) against NannyML's CBPE.

NannyML is not a dependency of retrainer (it pulls in telemetry, LightGBM, FLAML and cloud
filesystems); run this in a bench-only environment:

    python3.11 -m venv /tmp/nannyml-venv && /tmp/nannyml-venv/bin/pip install nannyml statsmodels
    /tmp/nannyml-venv/bin/python bench/cbpe_nannyml.py

It skips with a message when nannyml is not importable. Two models on the real credit data
(examples/credit/credit_data.csv; reference = a fitted model's held-out half, analysis = the
other half in chunks of 250 rows):

- a logistic regression: continuous scores, no ties: ours must equal NannyML to 1e-6, both
  through NannyML's metric functions on the same calibrated probabilities and through its whole
  ``CBPE`` estimator (which fits its own isotonic calibrator on the reference);
- a HistGradientBoosting model (no ties on these rows either): the same equality;
- a depth-4 decision tree, whose scores tie heavily (16 distinct values): NannyML walks tied
  rows one by one in whatever order ``argsort`` leaves them, ours takes a tie as one step; the
  results are still equal, because a calibrated probability is a function of the score, so the
  rows of a tie share one probability and trace the same straight segment of the expected ROC
  curve in any order. (Only NannyML's rounding of its cumulative sums to 5 decimals remains, an
  effect below 1e-7.)

NannyML calibrates only when its cross-validated check says calibration helps
(``needs_calibration``); the check is printed, and when it says no, ours is compared with the
uncalibrated probabilities, as NannyML then uses them.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML's telemetry: off
warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TOL = 1e-6
METRICS = ("roc_auc", "f1", "precision", "recall", "accuracy")


def main() -> int:
    try:
        import nannyml as nml
        from nannyml.calibration import IsotonicCalibrator, needs_calibration
        from nannyml.performance_estimation.confidence_based import metrics as nm
    except ImportError as exc:
        print(
            f"SKIPPED: nannyml is not importable here ({exc}); it is a bench-only cross-check\n"
            "(nannyml 0.13 also needs statsmodels, which it does not declare):\n"
            "  python3.11 -m venv /tmp/nannyml-venv && /tmp/nannyml-venv/bin/pip install nannyml statsmodels\n"
            "  /tmp/nannyml-venv/bin/python bench/cbpe_nannyml.py"
        )
        return 0
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from retrainer.core.cbpe import estimate, fit_calibration

    print(f"nannyml {nml.__version__}")
    df = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    y = (df.pop("Status") == "bad").to_numpy().astype(int)
    X = pd.get_dummies(df, dtype=float)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    fit_rows, ref_rows, ana_rows = np.array_split(order, [len(y) // 3, 2 * len(y) // 3])
    worst = 0.0
    failures = []
    models = {
        "logistic regression": make_pipeline(
            SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=2000)
        ),
        "HistGradientBoosting": HistGradientBoostingClassifier(max_iter=100, random_state=0),
        "decision tree, depth 4 (16 distinct scores: ties)": make_pipeline(
            SimpleImputer(), DecisionTreeClassifier(max_depth=4, random_state=0)
        ),
    }
    for name, model in models.items():
        model.fit(X.iloc[fit_rows], y[fit_rows])
        s_ref = model.predict_proba(X.iloc[ref_rows])[:, 1]
        s_ana = model.predict_proba(X.iloc[ana_rows])[:, 1]
        ties = len(s_ana) - len(np.unique(s_ana))
        cal = fit_calibration(y[ref_rows] == 1, s_ref)
        # NannyML's isotonic calibrator on the same rows: the same map?
        iso = IsotonicCalibrator()
        iso.fit(s_ref, y[ref_rows])
        cal_gap = float(np.max(np.abs(iso.calibrate(s_ana) - cal.apply(s_ana))))
        needed = needs_calibration(y[ref_rows], s_ref, IsotonicCalibrator())
        print(
            f"\n{name}: {len(ref_rows)} reference rows, {len(ana_rows)} analysis rows, "
            f"{ties} tied analysis scores; calibrators differ by {cal_gap:.1e}; NannyML's "
            f"needs_calibration: {needed}"
        )
        # 1. NannyML's metric functions on the same calibrated probabilities
        p = cal.apply(s_ana)
        pred = (s_ana >= 0.5).astype(int)
        ours = estimate(p, pred == 1, s_ana, METRICS)
        theirs = {
            "roc_auc": nm.estimate_roc_auc(p, s_ana),
            "f1": nm.estimate_f1(pred, p),
            "precision": nm.estimate_precision(pred, p),
            "recall": nm.estimate_recall(pred, p),
            "accuracy": nm.estimate_accuracy(pred, p),
        }
        print("   metric functions, same calibrated probabilities:")
        for m in METRICS:
            diff = abs(ours[m] - theirs[m])
            print(f"     {m:<9} ours {ours[m]:.8f}  nannyml {theirs[m]:.8f}  |diff| {diff:.1e}")
            worst = max(worst, diff)
            if diff > TOL:
                failures.append(f"{name} {m}: {diff:.1e}")
        # 2. NannyML's whole CBPE estimator, chunks of 250 rows
        ref_df = pd.DataFrame(
            {"y_pred_proba": s_ref, "y_pred": (s_ref >= 0.5).astype(int), "y_true": y[ref_rows]}
        )
        ana_df = pd.DataFrame({"y_pred_proba": s_ana, "y_pred": pred})
        est = nml.CBPE(
            y_pred_proba="y_pred_proba",
            y_pred="y_pred",
            y_true="y_true",
            problem_type="classification_binary",
            metrics=list(METRICS),
            chunk_size=250,
        ).fit(ref_df)
        res = est.estimate(ana_df).filter(period="analysis").to_df()
        probs = cal.apply(s_ana) if needed else s_ana
        diffs = {m: 0.0 for m in METRICS}
        for _, row in res.iterrows():
            start, end = int(row[("chunk", "start_index")]), int(row[("chunk", "end_index")]) + 1
            mine = estimate(probs[start:end], pred[start:end] == 1, s_ana[start:end], METRICS)
            for m in METRICS:
                diffs[m] = max(diffs[m], abs(mine[m] - float(row[(m, "value")])))
        print(f"   whole CBPE estimator ({len(res)} chunks of 250; max |diff| per metric):")
        for m in METRICS:
            print(f"     {m:<9} {diffs[m]:.1e}")
            worst = max(worst, diffs[m])
            if diffs[m] > TOL:
                failures.append(f"{name} CBPE {m}: {diffs[m]:.1e}")
    print(f"\nlargest difference, all models and metrics: {worst:.1e} (tolerance {TOL:g})")
    if failures:
        print("FAILED:\n  - " + "\n  - ".join(failures))
        return 1
    print("EQUAL to NannyML's CBPE within 1e-6, tied scores included")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
