"""The champion's metric on a window without labels: confidence-based performance estimation.

CBPE (as NannyML's ``CBPE`` does it, binary classification): a calibrated probability p that a
row is positive says how likely each prediction is right, so the expected confusion matrix of
a window is

    TP = sum p over rows predicted positive      FP = sum (1 - p) over rows predicted positive
    FN = sum p over rows predicted negative      TN = sum (1 - p) over rows predicted negative

and accuracy, precision, recall and F1 follow. ROC AUC is the area under the expected ROC
curve: rows ordered by the model's own (uncalibrated) score, each contributing p to the true
positives and 1 - p to the false positives. The expected log loss uses the model's own
probabilities against the calibrated ones.

The calibration is fitted at training time on held-out rows with isotonic regression and stored
beside the reference profile; the estimate needs only the window's scores and predictions. The
held-out rows are the test split, or (the default) the test split plus every training row scored
by a model fitted on the other folds. Scores of different models are on different scales (a
fold's model on four fifths of the rows, the champion on all of them), so cross-fitted rows are
calibrated on an *anchored* scale: each score is replaced by its mid-rank percentile among the
scores its own model gives the test split, and the window's scores likewise among the
champion's (``Calibration.anchor``).

**Assumption: covariate shift only.** The relation between score and outcome, P(y | score),
must be the same in the window as on the calibration rows. When the world changes *how* the
features relate to the outcome (concept drift), the estimate is wrong, and only delayed labels
tell; labels, when present, decide over the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ESTIMABLE = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
ASSUMPTION = (
    "covariate shift: P(outcome | score) in the window is as on the calibration rows; "
    "concept drift makes the estimate wrong"
)


ANCHOR_POINTS = 1001  # an anchor keeps at most this many quantiles of the test split's scores


def anchor_of(score: Sequence[float] | np.ndarray) -> list[float]:
    """The anchor of a model's scores on the test split: all of them sorted, or, beyond
    ``ANCHOR_POINTS`` rows, that many evenly spaced quantiles."""
    s = np.asarray(score, dtype=np.float64)
    if s.size == 0:
        raise ValueError("anchor: no test-split scores")
    return [float(v) for v in np.quantile(s, np.linspace(0.0, 1.0, min(s.size, ANCHOR_POINTS)))]


def anchored(score: Sequence[float] | np.ndarray, anchor: Sequence[float]) -> np.ndarray:
    """Each score's mid-rank percentile among a model's test-split scores (ties count half)."""
    a = np.asarray(anchor, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    below = np.searchsorted(a, s, side="left")
    upto = np.searchsorted(a, s, side="right")
    return (below + upto) / (2.0 * a.size)


@dataclass(frozen=True)
class Calibration:
    """Isotonic map from the model's positive-class score (or, with an ``anchor``, that score's
    percentile among the champion's scores on the test split) to a calibrated probability."""

    x: list[float]
    y: list[float]
    rows: int
    method: str = "isotonic"
    anchor: list[float] | None = None

    def apply(self, score: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities (scores outside the fitted range take the end values)."""
        s = np.asarray(score, dtype=np.float64)
        if self.anchor is not None:
            s = anchored(s, self.anchor)
        return np.interp(s, np.asarray(self.x), np.asarray(self.y))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.anchor is None:
            del d["anchor"]  # as profiles were before anchors
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        anchor = d.get("anchor")
        return cls(
            x=[float(v) for v in d["x"]],
            y=[float(v) for v in d["y"]],
            rows=int(d["rows"]),
            method=str(d.get("method", "isotonic")),
            anchor=None if anchor is None else [float(v) for v in anchor],
        )


def fit_calibration(
    positive: Sequence[bool] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    weight: np.ndarray | None = None,
    method: str = "isotonic",
    anchor: Sequence[float] | None = None,
) -> Calibration:
    """Isotonic calibration on held-out rows (sklearn's IsotonicRegression, clipped, as NannyML),
    optionally with a weight per row. With ``anchor`` (the champion's, from ``anchor_of``), the
    scores given are already anchored percentiles (``anchored``), and ``apply`` anchors the
    champion's scores the same way."""
    from sklearn.isotonic import IsotonicRegression

    y = np.asarray(positive, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"calibration: {y.shape} labels for {s.shape} scores")
    if y.size < 2 or y.min() == y.max():
        raise ValueError(
            f"calibration: needs held-out rows of both classes; found {int(y.sum())} positive "
            f"of {y.size}"
        )
    iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(s, y, sample_weight=weight)
    return Calibration(
        x=[float(v) for v in iso.X_thresholds_],
        y=[float(v) for v in iso.y_thresholds_],
        rows=int(y.size),
        method=method,
        anchor=None if anchor is None else [float(v) for v in anchor],
    )


# Reweighting the calibration rows to a window far from most of them (importance-weighted
# calibration). Not used by the monitor: bench/drift_calibration.py --only cbpe measures it as a
# diagnostic. On the demo's out-of-support shift it cut the estimate's error from 2.3 to 1.1-1.5
# points, but on an in-support selection (applicants under 30) it raised it from 1.7-2.7 to
# 4.2-4.7 (README: Decisions with confidence). Settings chosen on the demo's shift.
SHIFT_GATE = 0.5  # reweight when the weights' effective rows fall under half the calibration rows
WEIGHT_CAP = 20.0  # no calibration row weighs more than 20x the mean
MIN_EFFECTIVE_ROWS = 1000.0  # mixed with equal weights up to this many effective rows


def effective_rows(weight: np.ndarray) -> float:
    """Kish's effective sample size: (sum w)^2 / sum w^2."""
    w = np.asarray(weight, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w * w)) if w.size and np.any(w > 0) else 0.0


@dataclass(frozen=True)
class ShiftWeights:
    """The window's density ratio on the calibration rows, p(window | x) / p(calibration | x)."""

    weights: np.ndarray | None  # None: the window is not materially shifted (keep the calibration)
    effective_rows: float  # of the capped weights, before mixing with equal weights
    calibration_rows: int


def shift_weights(
    calibration_x: Any,
    window_x: Any,
    gate: float = SHIFT_GATE,
    cap: float = WEIGHT_CAP,
    min_effective: float = MIN_EFFECTIVE_ROWS,
) -> ShiftWeights:
    """Weights of the calibration rows for a window, from a logistic regression that tells the
    window's rows (features as the champion's preprocessing outputs them) from the calibration
    rows: the odds it gives a calibration row are how much likelier its features are in the
    window. Capped at ``cap`` times the mean; when their effective rows are at least ``gate`` of
    the calibration rows the window is not materially shifted (``weights`` None); otherwise mixed
    with equal weights just enough to keep ``min_effective`` effective rows (at most the gate),
    so that a few calibration rows never decide alone."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    n_cal, n_win = calibration_x.shape[0], window_x.shape[0]
    if n_cal < 2 or n_win < 1:
        return ShiftWeights(None, float(n_cal), n_cal)
    stack = sparse.vstack if sparse.issparse(calibration_x) else np.vstack
    X = stack([calibration_x, window_x])
    d = np.concatenate([np.zeros(n_cal), np.ones(n_win)])
    z = LogisticRegression(C=1.0, max_iter=500).fit(X, d).decision_function(calibration_x)
    w = np.exp(z - z.max())  # the odds, up to a constant factor (it cancels)
    w = w / w.mean()
    w = np.minimum(w, cap)
    w = w / w.mean()
    ess = effective_rows(w)
    if ess >= gate * n_cal:
        return ShiftWeights(None, ess, n_cal)
    floor = min(min_effective, gate * n_cal)
    if ess < floor:  # the smallest share of equal weights that reaches the floor
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if effective_rows((1 - mid) * w + mid) < floor else (lo, mid)
        w = (1 - hi) * w + hi
    return ShiftWeights(w, ess, n_cal)


def reweighted_calibration(
    positive: np.ndarray,
    scores: np.ndarray,
    weight: np.ndarray,
    anchor: Sequence[float] | None = None,
) -> Calibration:
    """Isotonic calibration of the calibration rows' scores under the window's weights.
    ``scores``: one column per cross-fitting repeat (their out-of-fold scores, pooled: with a
    few dozen effective rows one fold assignment alone would decide), rows as ``positive``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    repeats = s.shape[1]
    return fit_calibration(
        np.tile(np.asarray(positive, dtype=np.float64), repeats),
        s.T.reshape(-1),
        weight=np.tile(np.asarray(weight, dtype=np.float64), repeats),
        method="isotonic, reweighted to the window",
        anchor=anchor,
    )


def expected_roc_auc(calibrated: np.ndarray, score: np.ndarray) -> float:
    """Area under the expected ROC curve; rows with equal scores form one step.

    This is NannyML's ``estimate_roc_auc`` (less its rounding of cumulative sums to 5 decimals,
    an effect below 1e-7), tied scores included: NannyML walks a tie row by row in argsort's
    order, but calibrated probabilities are a function of the score, so a tie's rows share one
    probability and trace the same straight segment in any order.
    """
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    s = np.asarray(score, dtype=np.float64)[order]
    p = np.asarray(calibrated, dtype=np.float64)[order]
    if p.size == 0:
        return math.nan
    ends = np.flatnonzero(np.concatenate((s[1:] != s[:-1], [True])))
    tps = np.concatenate(([0.0], np.cumsum(p)[ends]))
    fps = np.concatenate(([0.0], (ends + 1) - tps[1:]))
    if tps[-1] <= 0 or fps[-1] <= 0:
        return math.nan
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def estimate(
    calibrated: Sequence[float] | np.ndarray,
    predicted_positive: Sequence[bool] | np.ndarray,
    score: Sequence[float] | np.ndarray | None = None,
    metrics: Sequence[str] = ESTIMABLE,
) -> dict[str, float]:
    """Expected value of each metric on the window (binary classification).

    ``calibrated``: calibrated P(positive) per row; ``predicted_positive``: the model's
    predicted label is the positive class; ``score``: the model's own positive-class
    probability (needed for roc_auc and log_loss).
    """
    p = np.asarray(calibrated, dtype=np.float64)
    yhat = np.asarray(predicted_positive, dtype=bool)
    if p.shape != yhat.shape or p.ndim != 1:
        raise ValueError(f"estimate: {p.shape} probabilities for {yhat.shape} predictions")
    n = p.size
    tp = float(p[yhat].sum())
    fp = float((1.0 - p[yhat]).sum())
    fn = float(p[~yhat].sum())
    tn = float((1.0 - p[~yhat]).sum())
    out: dict[str, float] = {}
    for m in metrics:
        if m == "accuracy":
            out[m] = (tp + tn) / n if n else math.nan
        elif m == "precision":
            out[m] = tp / (tp + fp) if tp + fp > 0 else 0.0
        elif m == "recall":
            out[m] = tp / (tp + fn) if tp + fn > 0 else 0.0
        elif m == "f1":
            den = tp + 0.5 * (fp + fn)
            out[m] = tp / den if den > 0 else 0.0
        elif m in ("roc_auc", "log_loss"):
            if score is None:
                raise ValueError(f"estimate: {m} needs the model's own scores")
            s = np.asarray(score, dtype=np.float64)
            if m == "roc_auc":
                out[m] = expected_roc_auc(p, s)
            else:
                eps = np.finfo(np.float64).eps
                s = np.clip(s, eps, 1 - eps)
                out[m] = float(-np.mean(p * np.log(s) + (1 - p) * np.log(1 - s)))
        else:
            raise ValueError(f"estimate: {m!r} cannot be estimated; expected one of {ESTIMABLE}")
    return out


@dataclass(frozen=True)
class EstimatedDrop:
    """The champion's estimated metric on the window against its value at training time."""

    metric: str
    reference: float
    estimated: float
    drop: float  # positive: estimated worse than at training time (direction-aware)
    limit: float | None
    exceeds: bool
    rows: int
    assumption: str = ASSUMPTION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimated_drop(
    metric: str,
    reference: float,
    estimated: float,
    rows: int,
    limit: float | None = None,
    lower_is_better: bool = False,
) -> EstimatedDrop:
    drop = estimated - reference if lower_is_better else reference - estimated
    exceeds = limit is not None and math.isfinite(drop) and drop >= limit
    return EstimatedDrop(metric, reference, estimated, drop, limit, bool(exceeds), rows)


# Where the estimate can be trusted. Covariate shift is not enough: the calibration maps scores to
# outcomes as they were on its rows, so a window whose rows lie where the calibration rows seldom
# were is extrapolated. On the demo's shifted traffic (older applicants asking for more, a corner
# with no training row) a third of the rows lie beyond 99% of the reference rows and the estimate
# errs by 4 points; inside the support (under 30s, rent 3x, a fixed job) the share averages 2-5%
# (single 200-row windows up to 10%) and the estimate's bias stays within a point (README:
# Decisions with confidence).
SUPPORT_QUANTILE = 0.99
SUPPORT_ROWS = 5000  # each side's rows for the check, at most (seeded sample)


@dataclass(frozen=True)
class Support:
    """How much of a window lies outside the reference rows (those the calibration stands for)."""

    outside_share: float  # window rows scored beyond SUPPORT_QUANTILE of the reference rows
    limit: float
    within: bool  # outside_share < limit: the estimate is trusted
    rows: int
    reference_rows: int
    method: str = (
        "logistic regression telling window rows from reference rows (numeric standardised, "
        f"categories one-hot); share of window rows beyond its {SUPPORT_QUANTILE:.0%} quantile "
        "on the reference rows"
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode(
    ref: Any, win: Any, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and window rows as numbers, both on the reference's terms: numeric columns
    standardised by its mean and deviation (plus a missing flag), categories one-hot over its
    100 commonest (plus one column for any other). A column the window lacks is all missing."""
    import pandas as pd

    cols: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])

    def column(frame: Any, c: str, fill: Any) -> Any:
        return frame[c] if c in frame else pd.Series(fill, frame.index)

    for c in numeric:
        r = pd.to_numeric(ref[c], errors="coerce")
        mu = float(r.mean()) if r.notna().any() else 0.0
        sd = float(r.std()) if r.notna().sum() > 1 else 0.0
        sd = sd if sd > 0 and math.isfinite(sd) else 1.0
        for out, frame in zip(cols, (ref, win), strict=True):
            v = pd.to_numeric(column(frame, c, np.nan), errors="coerce")
            out.append(((v - mu) / sd).clip(-50, 50).fillna(0.0).to_numpy(dtype=np.float64))
            out.append(v.isna().to_numpy(dtype=np.float64))
    for c in categorical:
        known = ref[c].astype(str).value_counts().index[:100]
        for out, frame in zip(cols, (ref, win), strict=True):
            v = column(frame, c, "").astype(str)
            out.extend((v == k).to_numpy(dtype=np.float64) for k in known)
            out.append((~v.isin(known)).to_numpy(dtype=np.float64))  # unseen (or rare) categories
    xr, xw = (
        np.column_stack(out) if out else np.zeros((len(frame), 1))
        for out, frame in zip(cols, (ref, win), strict=True)
    )
    return xr, xw


def support(
    reference: Any,
    window: Any,
    numeric: Sequence[str],
    categorical: Sequence[str],
    limit: float,
    seed: int = 0,
) -> Support:
    """The share of the window's rows that lie outside the reference rows' support: a logistic
    regression learns to tell window rows from reference rows, and a window row counts as outside
    when it scores beyond what 99% of the reference rows do. Inside the support (however the
    window reweights it) about 2-5% of the rows do on average; a window that reaches where the
    reference seldom was has many more."""
    from sklearn.linear_model import LogisticRegression

    ref = (
        reference.sample(SUPPORT_ROWS, random_state=seed)
        if len(reference) > SUPPORT_ROWS
        else reference
    )
    win = window.sample(SUPPORT_ROWS, random_state=seed) if len(window) > SUPPORT_ROWS else window
    if len(ref) < 2 or len(win) < 1:
        raise ValueError(f"support: {len(ref)} reference and {len(win)} window rows")
    numeric = [c for c in numeric if c in ref.columns]  # a column the window lacks: all missing
    categorical = [c for c in categorical if c in ref.columns]
    xr, xw = _encode(ref, win, numeric, categorical)
    d = np.concatenate([np.zeros(len(xr)), np.ones(len(xw))])
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(np.vstack([xr, xw]), d)
    edge = np.quantile(lr.decision_function(xr), SUPPORT_QUANTILE)
    share = float(np.mean(lr.decision_function(xw) > edge))
    return Support(share, float(limit), share < limit, int(len(window)), int(len(reference)))
