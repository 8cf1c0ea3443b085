"""Candidate vs champion on the same test rows: paired statistics for the promotion gate.

The gate used to promote when ``candidate - champion >= min_improvement`` on one test split.
That point rule cannot tell noise from improvement: how much a difference wobbles from one test
split to the next depends on the number of rows and on how often the two models disagree. Here
every gate metric's difference (the *improvement*, positive when the candidate is better,
whatever the metric's direction) gets:

- a seeded **paired bootstrap** (both models scored on the same resampled rows; for
  classification the rows are resampled within each class, so the class counts of the test split
  are kept, which is what a stratified bootstrap of ROC AUC needs), at least 1,000 resamples,
  vectorised: an interval for every metric;
- where a standard paired test exists, that test, which then *decides*:
  DeLong's test for ROC AUC (binary), McNemar's test for accuracy (exact binomial when the
  models disagree on fewer than 25 rows; Tango's score test when a margin is tested), a paired
  t-test on the per-row losses for log_loss, mae and r2, and the delta method on the per-row
  squared errors for rmse. Precision, recall, F1 and multiclass ROC AUC have no such test: the
  bootstrap decides.

Promotion means one of two things (``comparison``), at a ``confidence`` level (one-sided):

- ``superiority``: the candidate is better by more than ``margin``: the lower confidence bound
  of the improvement is above ``margin`` (H0: improvement <= margin is rejected);
- ``non_inferiority``: the candidate is not worse than the champion by ``margin`` or more: the
  lower confidence bound is above ``-margin`` (H0: improvement <= -margin is rejected).

At ``confidence=0.5`` the lower bound is the point estimate itself, so ``superiority`` with
``margin=min_improvement`` and ``confidence=0.5`` is today's point gate.

Slices (``compare_slices``): the same paired test inside each group of rows (a region, an age
band) with enough rows, for *harm*: H0 "the candidate is not worse than the champion by more than
the slice margin"; p-values Holm-corrected across slices; any rejected H0 blocks promotion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from scipy import optimize, special, stats

from retrainer.core.multiplicity import holm

Task = Literal["classification", "regression"]
ComparisonKind = Literal["superiority", "non_inferiority"]

CLASSIFICATION = ("roc_auc", "f1", "accuracy", "precision", "recall", "log_loss")
REGRESSION = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
MIN_RESAMPLES = 1000
EXACT_MCNEMAR_BELOW = 25  # discordant pairs: under this McNemar uses the exact binomial
_CHUNK_CELLS = 2_000_000  # resamples x rows held in memory at once


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One model's output on the test rows.

    Classification: ``pred`` holds class indices (0..K-1) and ``proba`` the (n, K) class
    probabilities. Regression: ``pred`` holds the predicted values, ``proba`` is None.
    """

    pred: np.ndarray
    proba: np.ndarray | None = None


def encode_labels(values: Sequence[Any] | np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Labels as indices into the model's classes (``str`` match, as the gate's metrics do)."""
    index = {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = index[str(v)]
        except KeyError:
            raise ValueError(
                f"label {v!r} (row {i}) is not one of the model's classes {list(classes)}; "
                "both models must be scored on the same classes"
            ) from None
    return out


# --- metrics on weighted resamples (weights all 1: the point value) --------------------------


def _loss_rows(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row log loss as sklearn computes it (rows renormalised, clipped at float eps)."""
    p = np.asarray(proba, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    eps = np.finfo(p.dtype).eps
    picked = np.clip(p[np.arange(y.size), y], eps, 1 - eps)
    return -np.log(picked)


class _AucInput:
    """One score column prepared once for AUC on weighted resamples.

    The negatives are sorted by score; for each positive, searchsorted finds how many negatives
    score below it (and how many tie), so a resample's AUC is a cumulative sum of the
    negatives' weights read at those places, weighted by the positives' weights.
    """

    def __init__(self, positive: np.ndarray, score: np.ndarray) -> None:
        pos_rows = np.flatnonzero(positive)
        neg_rows = np.flatnonzero(~positive)
        order = np.argsort(score[neg_rows], kind="stable")
        self.neg_sorted = neg_rows[order]
        neg_scores = score[self.neg_sorted]
        self.pos_rows = pos_rows
        self.below = np.searchsorted(neg_scores, score[pos_rows], side="left")
        self.upto = np.searchsorted(neg_scores, score[pos_rows], side="right")
        self.ties = bool(np.any(self.below != self.upto))

    def auc(self, w: np.ndarray) -> np.ndarray:
        """Mann-Whitney AUC (ties count one half) for every row of weights w."""
        wn = w[:, self.neg_sorted]
        cum = np.zeros((w.shape[0], wn.shape[1] + 1), dtype=w.dtype)
        np.cumsum(wn, axis=1, out=cum[:, 1:])  # integer counts: exact in float32 below 2**24
        lower = cum[:, self.below]
        if self.ties:
            lower = lower + 0.5 * (cum[:, self.upto] - lower)
        wp = w[:, self.pos_rows]
        num = np.multiply(wp, lower).sum(axis=1, dtype=np.float64)  # exact products
        den = wp.sum(axis=1, dtype=np.float64) * cum[:, -1].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)


class _Metrics:
    """One model's per-row quantities, so that every metric of a resample is one matrix product.

    A resample is a row of weights (how often each test row was drawn); the sums each metric
    needs are ``weights @ columns``; ROC AUC sorts the rows once and accumulates weights.
    """

    def __init__(
        self, task: Task, y: np.ndarray, scored: Scored, positive: int | None, labels: np.ndarray
    ) -> None:
        self.task = task
        self.positive = positive
        self.labels = labels
        cols: dict[str, np.ndarray] = {}
        self.auc_inputs: list[_AucInput] = []
        if task == "regression":
            err = np.asarray(scored.pred, dtype=np.float64) - y
            yc = y - y.mean()  # centred: the weighted SST without cancellation
            cols |= {"sq": err * err, "abs": np.abs(err), "y": yc, "y2": yc * yc}
        else:
            pred = np.asarray(scored.pred, dtype=np.int64)
            cols["correct"] = (pred == y).astype(np.float64)
            if positive is not None:
                yp, pp = y == positive, pred == positive
                cols |= {"tp": (yp & pp).astype(float), "pp": pp.astype(float), "yp": yp * 1.0}
            else:
                for c in labels:
                    cols[f"tp{c}"] = ((y == c) & (pred == c)).astype(np.float64)
                    cols[f"pp{c}"] = (pred == c).astype(np.float64)
                    cols[f"yp{c}"] = (y == c).astype(np.float64)
            if scored.proba is not None:
                proba = np.asarray(scored.proba, dtype=np.float64)
                cols["loss"] = _loss_rows(y, proba)
                if proba.shape[1] == 2:
                    pos = 1 if positive is None else positive
                    self.auc_inputs = [_AucInput(y == pos, proba[:, pos])]
                else:
                    present = set(np.unique(y).tolist())
                    self.auc_inputs = [
                        _AucInput(y == c, proba[:, c]) for c in labels if int(c) in present
                    ]
        self.names = list(cols)
        self.columns = np.column_stack([cols[k] for k in self.names])
        self.col = {k: i for i, k in enumerate(self.names)}

    def evaluate(self, metrics: Sequence[str], w: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric on every row of weights ``w`` (resamples x test rows)."""
        sums = w @ self.columns.astype(w.dtype)
        s = lambda k: sums[:, self.col[k]].astype(np.float64)  # noqa: E731
        total = w.sum(axis=1, dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for m in metrics:
                if m == "rmse":
                    out[m] = np.sqrt(s("sq") / total)
                elif m == "mae":
                    out[m] = s("abs") / total
                elif m == "r2":
                    sst = s("y2") - s("y") ** 2 / total
                    out[m] = 1.0 - s("sq") / sst
                elif m == "accuracy":
                    out[m] = s("correct") / total
                elif m == "log_loss":
                    out[m] = s("loss") / total
                elif m == "roc_auc":
                    if not self.auc_inputs:
                        raise ValueError("roc_auc needs the models' class probabilities")
                    out[m] = np.mean([a.auc(w) for a in self.auc_inputs], axis=0)
                elif m in ("precision", "recall", "f1"):
                    out[m] = self._prf(m, s)
                else:
                    raise ValueError(f"unknown metric {m!r}")
        return out

    def _prf(self, metric: str, s: Any) -> np.ndarray:
        keys = [""] if self.positive is not None else [str(c) for c in self.labels]
        vals = []
        for k in keys:
            tp, n_pred, n_true = s(f"tp{k}"), s(f"pp{k}"), s(f"yp{k}")
            if metric == "precision":
                vals.append(np.where(n_pred > 0, tp / np.maximum(n_pred, 1e-300), 0.0))
            elif metric == "recall":
                vals.append(np.where(n_true > 0, tp / np.maximum(n_true, 1e-300), 0.0))
            else:
                den = n_pred + n_true
                vals.append(np.where(den > 0, 2 * tp / np.maximum(den, 1e-300), 0.0))
        return np.mean(vals, axis=0)


def point_metrics(
    task: Task,
    metrics: Sequence[str],
    y: np.ndarray,
    scored: Scored,
    positive: int | None = None,
) -> dict[str, float]:
    """Each metric of one model on the test rows (the same definitions as the bootstrap's)."""
    y = _check_y(task, y)
    labels = _labels(task, y, scored)
    engine = _Metrics(task, y, scored, _positive(task, scored, positive), labels)
    values = engine.evaluate(metrics, np.ones((1, y.size), dtype=np.float64))
    return {m: float(v[0]) for m, v in values.items()}


# --- paired tests ----------------------------------------------------------------------------


class PairedTest(Protocol):
    """A test of the improvement (candidate better: positive) with one-sided p-values."""

    @property
    def method(self) -> str: ...

    @property
    def estimate(self) -> float: ...

    def p_greater(self, threshold: float) -> float:
        """p-value of H0: improvement <= threshold (small: the candidate is better than that)."""
        ...

    def p_less(self, threshold: float) -> float:
        """p-value of H0: improvement >= threshold (small: the candidate is worse than that)."""
        ...

    def lower(self, confidence: float) -> float:
        """One-sided lower confidence bound of the improvement."""
        ...

    def record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class NormalTest:
    """z-test on an estimate with a standard error (DeLong, the delta method)."""

    method: str
    estimate: float
    se: float
    extra: dict[str, Any] = field(default_factory=dict)

    def _z(self, threshold: float) -> float:
        if self.se > 0:
            return (self.estimate - threshold) / self.se
        diff = self.estimate - threshold
        return math.inf if diff > 0 else -math.inf if diff < 0 else 0.0

    def p_greater(self, threshold: float) -> float:
        return float(special.ndtr(-self._z(threshold)))

    def p_less(self, threshold: float) -> float:
        return float(special.ndtr(self._z(threshold)))

    def lower(self, confidence: float) -> float:
        return float(self.estimate - special.ndtri(confidence) * self.se)

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "estimate": self.estimate, "se": self.se, **self.extra}


@dataclass(frozen=True)
class TTest:
    """Paired t-test on per-row differences (scaled: ``scale`` maps the mean to the metric)."""

    method: str
    estimate: float
    se: float
    df: int
    extra: dict[str, Any] = field(default_factory=dict)

    def _t(self, threshold: float) -> float:
        if self.se > 0:
            return (self.estimate - threshold) / self.se
        diff = self.estimate - threshold
        return math.inf if diff > 0 else -math.inf if diff < 0 else 0.0

    def p_greater(self, threshold: float) -> float:
        return float(stats.t.sf(self._t(threshold), self.df))

    def p_less(self, threshold: float) -> float:
        return float(stats.t.cdf(self._t(threshold), self.df))

    def lower(self, confidence: float) -> float:
        return float(self.estimate - stats.t.ppf(confidence, self.df) * self.se)

    def record(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "estimate": self.estimate,
            "se": self.se,
            "df": self.df,
            **self.extra,
        }


def tango_z(b: int, c: int, n: int, delta0: float) -> float:
    """Tango's (1998) score statistic for H0: p_b - p_c = delta0 in a paired 2x2 table.

    b: rows only the candidate gets right, c: rows only the champion gets right, n: all rows.
    At delta0 = 0 it is McNemar's z, (b - c) / sqrt(b + c).
    """
    a_ = 2.0 * n
    b_ = -b - c + (2.0 * n - b + c) * delta0
    c_ = -c * delta0 * (1.0 - delta0)
    q21 = (math.sqrt(max(b_ * b_ - 4.0 * a_ * c_, 0.0)) - b_) / (2.0 * a_)
    var = n * (2.0 * q21 + delta0 * (1.0 - delta0))
    num = b - c - n * delta0
    if var <= 0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


@dataclass(frozen=True)
class McNemarTest:
    """Accuracy difference from the discordant pairs (McNemar; Tango's score test off zero)."""

    b: int  # candidate right, champion wrong
    c: int  # candidate wrong, champion right
    n: int
    method: str = "mcnemar"

    @property
    def estimate(self) -> float:
        return (self.b - self.c) / self.n if self.n else 0.0

    @property
    def exact(self) -> bool:
        return self.b + self.c < EXACT_MCNEMAR_BELOW

    def p_greater(self, threshold: float) -> float:
        if threshold == 0.0 and self.exact:  # P(Bin(b + c, 1/2) >= b)
            return float(stats.binom.sf(self.b - 1, self.b + self.c, 0.5)) if self.b else 1.0
        if threshold == 0.0 and self.b + self.c == 0:
            return 1.0
        return float(special.ndtr(-tango_z(self.b, self.c, self.n, threshold)))

    def p_less(self, threshold: float) -> float:
        if threshold == 0.0 and self.exact:
            return float(stats.binom.cdf(self.b, self.b + self.c, 0.5))
        if threshold == 0.0 and self.b + self.c == 0:
            return 1.0
        return float(special.ndtr(tango_z(self.b, self.c, self.n, threshold)))

    def lower(self, confidence: float) -> float:
        """Tango's score bound: the delta0 at which the statistic equals the normal quantile."""
        if self.n == 0:
            return -1.0
        z = float(special.ndtri(confidence))
        lo, hi = -1.0 + 1e-12, 1.0 - 1e-12
        f = lambda d: tango_z(self.b, self.c, self.n, d) - z  # noqa: E731
        if f(lo) <= 0:
            return -1.0
        if f(hi) >= 0:
            return 1.0
        return float(optimize.brentq(f, lo, hi, xtol=1e-12))

    def record(self) -> dict[str, Any]:
        return {
            "method": "mcnemar_exact" if self.exact else "mcnemar_score",
            "estimate": self.estimate,
            "candidate_only_correct": self.b,
            "champion_only_correct": self.c,
            "rows": self.n,
            "disagreement": (self.b + self.c) / self.n if self.n else 0.0,
            "p_two_sided_mcnemar": mcnemar_p_two_sided(self.b, self.c),
        }


def mcnemar_p_two_sided(b: int, c: int) -> float:
    """McNemar's test, two-sided: exact binomial under 25 discordant pairs, chi-square above."""
    if b + c == 0:
        return 1.0
    if b + c < EXACT_MCNEMAR_BELOW:
        return float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), b + c, 0.5)))
    return float(stats.chi2.sf((b - c) ** 2 / (b + c), 1))


@dataclass(frozen=True)
class BootstrapTest:
    """Percentile bootstrap of the improvement: what decides when no standard test exists."""

    deltas: np.ndarray
    estimate: float
    method: str = "bootstrap"

    def p_greater(self, threshold: float) -> float:
        d = self.deltas[np.isfinite(self.deltas)]
        return float(np.mean(d <= threshold)) if d.size else 1.0

    def p_less(self, threshold: float) -> float:
        d = self.deltas[np.isfinite(self.deltas)]
        return float(np.mean(d >= threshold)) if d.size else 1.0

    def lower(self, confidence: float) -> float:
        d = self.deltas[np.isfinite(self.deltas)]
        return float(np.quantile(d, 1.0 - confidence)) if d.size else -math.inf

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "estimate": self.estimate, "resamples": self.deltas.size}


# --- DeLong ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeLong:
    """Two correlated ROC AUCs on the same rows (DeLong, DeLong & Clarke-Pearson 1988)."""

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    cov_ab: float

    @property
    def delta(self) -> float:
        return self.auc_a - self.auc_b

    @property
    def se(self) -> float:
        return math.sqrt(max(self.var_a + self.var_b - 2.0 * self.cov_ab, 0.0))

    @property
    def z(self) -> float:
        return self.delta / self.se if self.se > 0 else 0.0

    @property
    def p_two_sided(self) -> float:
        return float(2.0 * special.ndtr(-abs(self.z)))


def delong(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLong:
    """DeLong's covariance of two AUCs with midranks, O(n log n) (Sun & Xu 2014)."""
    pos = np.asarray(positive, dtype=bool)
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's test needs at least 2 positive and 2 negative rows; found {m} and {n}"
        )
    scores = np.vstack([np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)])
    x, y = scores[:, pos], scores[:, ~pos]
    tz = stats.rankdata(np.hstack([x, y]), axis=1)  # midranks in all rows
    tx = stats.rankdata(x, axis=1)
    ty = stats.rankdata(y, axis=1)
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives below it (ties: half)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives above it
    aucs = v10.mean(axis=1)
    s = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return DeLong(float(aucs[0]), float(aucs[1]), float(s[0, 0]), float(s[1, 1]), float(s[0, 1]))


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via midranks (Mann-Whitney), equal to sklearn's roc_auc_score."""
    pos = np.asarray(positive, dtype=bool)
    m, n = int(pos.sum()), int((~pos).sum())
    ranks = stats.rankdata(np.asarray(score, np.float64))
    return float((ranks[pos].sum() - m * (m + 1) / 2.0) / (m * n))


# --- the bootstrap ---------------------------------------------------------------------------


def _strata(task: Task, y: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Rows reordered so each class is contiguous, and each class's [start, end) range."""
    if task == "regression":
        return np.arange(y.size), [(0, y.size)]
    order = np.argsort(y, kind="stable")
    _, starts = np.unique(y[order], return_index=True)
    ends = [*starts[1:].tolist(), y.size]
    return order, list(zip(starts.tolist(), ends, strict=True))


def _weights(rng: np.random.Generator, bounds: list[tuple[int, int]], size: int, n: int):
    """``size`` resamples as weights: how often each row was drawn (within its stratum)."""
    draws = np.hstack([rng.integers(lo, hi, size=(size, hi - lo)) for lo, hi in bounds])
    draws += (np.arange(size, dtype=np.int64) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=size * n)
    return counts.reshape(size, n).astype(np.float32)


def paired_bootstrap(
    task: Task,
    metrics: Sequence[str],
    y: np.ndarray,
    candidate: Scored,
    champion: Scored,
    positive: int | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Improvement of each metric on ``resamples`` paired resamples of the test rows (seeded).

    Classification resamples within each class (the split's class counts are kept).
    """
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples: expected at least {MIN_RESAMPLES}; found {resamples}")
    y = _check_y(task, y)
    pos = _positive(task, candidate, positive)
    labels = _labels(task, y, candidate, champion)
    order, strata = _strata(task, y)
    y, candidate, champion = y[order], _take(candidate, order), _take(champion, order)
    cand = _Metrics(task, y, candidate, pos, labels)
    champ = _Metrics(task, y, champion, pos, labels)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_CELLS // max(y.size, 1)))
    out: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        w = _weights(rng, strata, size, y.size)
        a, b = cand.evaluate(metrics, w), champ.evaluate(metrics, w)
        for m in metrics:
            out[m].append(b[m] - a[m] if m in LOWER_IS_BETTER else a[m] - b[m])
        done += size
    return {m: np.concatenate(v) for m, v in out.items()}


# --- the standard test of each metric --------------------------------------------------------


def paired_test(
    task: Task,
    metric: str,
    y: np.ndarray,
    candidate: Scored,
    champion: Scored,
    positive: int | None = None,
    bootstrap: np.ndarray | None = None,
) -> PairedTest:
    """The test that decides for ``metric`` (a standard paired test, else the bootstrap)."""
    y = _check_y(task, y)
    n = y.size
    if task == "regression":
        yc = np.asarray(candidate.pred, np.float64) - y
        yh = np.asarray(champion.pred, np.float64) - y
        if metric == "mae":
            return _paired_t("paired_t_abs_error", np.abs(yh) - np.abs(yc))
        if metric == "r2":
            sst = float(np.sum((y - y.mean()) ** 2))
            if sst <= 0:
                raise ValueError("r2: the test rows' target is constant; r2 is undefined")
            return _paired_t("paired_t_squared_error", yh * yh - yc * yc, scale=n / sst)
        if metric == "rmse":
            sq_c, sq_h = yc * yc, yh * yh
            r_c, r_h = math.sqrt(sq_c.mean()), math.sqrt(sq_h.mean())
            if r_c == 0 or r_h == 0:
                return NormalTest("delta_method_rmse", r_h - r_c, 0.0)
            g = sq_h / (2 * r_h) - sq_c / (2 * r_c)
            se = float(np.std(g, ddof=1) / math.sqrt(n)) if n > 1 else math.inf
            return NormalTest("delta_method_rmse", r_h - r_c, se)
        raise ValueError(f"unknown regression metric {metric!r}; expected one of {REGRESSION}")
    pred_c = np.asarray(candidate.pred, np.int64)
    pred_h = np.asarray(champion.pred, np.int64)
    if metric == "accuracy":
        ok_c, ok_h = pred_c == y, pred_h == y
        return McNemarTest(int(np.sum(ok_c & ~ok_h)), int(np.sum(~ok_c & ok_h)), n)
    if metric == "log_loss":
        if candidate.proba is None or champion.proba is None:
            raise ValueError("log_loss needs both models' class probabilities")
        return _paired_t(
            "paired_t_log_loss", _loss_rows(y, champion.proba) - _loss_rows(y, candidate.proba)
        )
    if metric == "roc_auc" and candidate.proba is not None and candidate.proba.shape[1] == 2:
        assert champion.proba is not None
        p = _positive(task, candidate, positive)
        assert p is not None
        d = delong(y == p, candidate.proba[:, p], champion.proba[:, p])
        return NormalTest(
            "delong",
            d.delta,
            d.se,
            {
                "auc_candidate": d.auc_a,
                "auc_champion": d.auc_b,
                "z": d.z,
                "p_two_sided": d.p_two_sided,
            },
        )
    if bootstrap is None:
        bootstrap = paired_bootstrap(task, [metric], y, candidate, champion, positive)[metric]
    estimate = point_metrics(task, [metric], y, candidate, positive)[metric]
    other = point_metrics(task, [metric], y, champion, positive)[metric]
    delta = other - estimate if metric in LOWER_IS_BETTER else estimate - other
    return BootstrapTest(bootstrap, delta)


def _paired_t(method: str, d: np.ndarray, scale: float = 1.0) -> TTest:
    n = d.size
    mean = float(d.mean()) * scale
    se = float(np.std(d, ddof=1) / math.sqrt(n)) * scale if n > 1 else math.inf
    return TTest(method, mean, se, max(n - 1, 1))


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricComparison:
    """One metric, candidate vs champion on the same rows, and whether it clears the bar."""

    metric: str
    candidate: float
    champion: float
    improvement: float  # positive: the candidate is better (direction-aware)
    comparison: ComparisonKind
    margin: float
    confidence: float
    threshold: float  # the improvement the lower bound must exceed: margin or -margin
    method: str  # the test that decided
    p_value: float  # one-sided, H0: improvement <= threshold
    lower: float  # the deciding test's one-sided lower confidence bound
    bootstrap_lower: float  # the bootstrap's one-sided lower bound at the same confidence
    bootstrap_interval: tuple[float, float]  # two-sided, at the same confidence
    bootstrap_se: float
    passed: bool
    rows: int
    test: dict[str, Any] = field(default_factory=dict)
    # each rule's outcome on the same test (superiority / non_inferiority: margin, threshold,
    # p_value, passed), the deciding one included: what the other rule would have decided
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bootstrap_interval"] = list(self.bootstrap_interval)
        return {k: _jsonable(v) for k, v in d.items()}

    def reason(self) -> str:
        word = "better than" if self.comparison == "superiority" else "not worse than"
        bar = f"{self.margin:g}" if self.comparison == "superiority" else f"-{self.margin:g}"
        verdict = "clears" if self.passed else "does not clear"
        return (
            f"{self.metric}: improvement {self.improvement:+.4f}, {self.confidence:.0%} lower bound "
            f"{self.lower:+.4f} ({self.method}, p={self.p_value:.3g}, {self.rows} rows) "
            f"{verdict} the {self.comparison} bar {bar} (candidate {word} the champion by "
            f"margin {self.margin:g})"
        )


@dataclass(frozen=True)
class Comparison:
    """Every metric compared, with the bootstrap's settings (for the decision record)."""

    metrics: dict[str, MetricComparison]
    rows: int
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "resamples": self.resamples,
            "seed": self.seed,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
        }


def check_settings(comparison: str, margin: float, confidence: float) -> None:
    if comparison not in ("superiority", "non_inferiority"):
        raise ValueError(
            f"comparison: expected superiority or non_inferiority; found {comparison!r}"
        )
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin: expected a number >= 0 (in the metric's units); found {margin}")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence: expected a level in [0.5, 1), e.g. 0.95; found {confidence}")


def compare(
    task: Task,
    metrics: Sequence[str],
    y: np.ndarray,
    candidate: Scored,
    champion: Scored,
    *,
    positive: int | None = None,
    comparison: ComparisonKind = "non_inferiority",
    margin: float = 0.0,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    rule_margins: dict[str, float] | None = None,
) -> Comparison:
    """Each metric's improvement with its bootstrap interval and its deciding test.

    ``rule_margins`` (rule -> margin) adds each rule's outcome on the same test to ``rules``
    (the deciding rule at ``margin`` always is)."""
    check_settings(comparison, margin, confidence)
    margins = {**(rule_margins or {}), comparison: margin}
    for rule, rule_margin in margins.items():
        check_settings(rule, rule_margin, confidence)
    y = _check_y(task, y)
    _check_same_rows(y, candidate, champion)
    boot = paired_bootstrap(task, metrics, y, candidate, champion, positive, resamples, seed)
    cand_pts = point_metrics(task, metrics, y, candidate, positive)
    champ_pts = point_metrics(task, metrics, y, champion, positive)
    threshold = margin if comparison == "superiority" else -margin
    alpha = 1.0 - confidence
    out: dict[str, MetricComparison] = {}
    for m in metrics:
        test = paired_test(task, m, y, candidate, champion, positive, boot[m])
        deltas = boot[m][np.isfinite(boot[m])]
        lo2, hi2 = (
            np.quantile(deltas, [alpha / 2, 1 - alpha / 2]) if deltas.size else (np.nan, np.nan)
        )
        p = test.p_greater(threshold)
        c, h = cand_pts[m], champ_pts[m]
        out[m] = MetricComparison(
            metric=m,
            candidate=c,
            champion=h,
            improvement=h - c if m in LOWER_IS_BETTER else c - h,
            comparison=comparison,
            margin=margin,
            confidence=confidence,
            threshold=threshold,
            method=test.record()["method"],
            p_value=p,
            lower=test.lower(confidence),
            bootstrap_lower=float(np.quantile(deltas, alpha)) if deltas.size else math.nan,
            bootstrap_interval=(float(lo2), float(hi2)),
            bootstrap_se=float(np.std(deltas, ddof=1)) if deltas.size > 1 else math.nan,
            passed=bool(p < alpha),
            rows=int(y.size),
            test=test.record(),
            rules={r: _rule_outcome(test, r, mr, alpha) for r, mr in sorted(margins.items())},
        )
    return Comparison(out, int(y.size), resamples, seed)


def _rule_outcome(test: PairedTest, rule: str, margin: float, alpha: float) -> dict[str, Any]:
    threshold = margin if rule == "superiority" else -margin
    p = test.p_greater(threshold)
    return {"margin": margin, "threshold": threshold, "p_value": p, "passed": bool(p < alpha)}


# --- slices ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceResult:
    slice: str
    rows: int
    candidate: float | None
    champion: float | None
    improvement: float | None
    p_harm: float | None  # one-sided, H0: improvement >= -slice_margin
    p_harm_holm: float | None
    method: str
    harmed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SliceReport:
    column: str
    metric: str
    slice_margin: float
    confidence: float
    min_rows: int
    slices: list[SliceResult]

    @property
    def blocked(self) -> bool:
        return any(s.harmed for s in self.slices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "metric": self.metric,
            "slice_margin": self.slice_margin,
            "confidence": self.confidence,
            "min_rows": self.min_rows,
            "blocked": self.blocked,
            "slices": [s.to_dict() for s in self.slices],
        }


def slice_labels(
    values: Sequence[Any] | np.ndarray, bins: int | Sequence[float] | None = None
) -> np.ndarray:
    """Group labels for a column: categories as they are, numbers by bin edges or quantiles.

    ``bins`` an int: that many quantile bins of ``values``; a list: inner edges (right-closed).
    Nulls are their own group, ``<null>``.
    """
    arr = np.asarray(values, dtype=object)
    if bins is None:
        return np.array(["<null>" if _is_null(v) else str(v) for v in arr], dtype=object)
    x = np.array([np.nan if _is_null(v) else float(v) for v in arr], dtype=np.float64)
    if isinstance(bins, int):
        finite = x[np.isfinite(x)]
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    else:
        edges = np.asarray(sorted(bins), dtype=np.float64)
    bounds = ["-inf", *(format(e, "g") for e in edges), "+inf"]
    names = [f"({lo}, {hi}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    which = np.searchsorted(edges, x, side="left")
    return np.array(
        ["<null>" if np.isnan(v) else names[i] for v, i in zip(x, which, strict=True)],
        dtype=object,
    )


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def compare_slices(
    task: Task,
    metric: str,
    y: np.ndarray,
    candidate: Scored,
    champion: Scored,
    groups: np.ndarray,
    *,
    column: str = "",
    positive: int | None = None,
    slice_margin: float = 0.0,
    confidence: float = 0.95,
    min_rows: int = 100,
    resamples: int = 2000,
    seed: int = 0,
) -> SliceReport:
    """Per-slice harm tests, Holm-corrected: a slice blocks when it is significantly worse."""
    check_settings("non_inferiority", slice_margin, confidence)
    y = _check_y(task, y)
    groups = np.asarray(groups, dtype=object)
    if groups.size != y.size:
        raise ValueError(f"slices: {groups.size} group labels for {y.size} test rows")
    results: list[tuple[str, int, dict[str, Any]]] = []
    for name in sorted({str(g) for g in groups}):
        rows = np.flatnonzero(groups.astype(str) == name)
        info: dict[str, Any] = {"method": "", "note": ""}
        if rows.size < min_rows:
            info["note"] = f"{rows.size} rows < min_rows {min_rows}: not tested"
        else:
            ys = y[rows]
            sub_c = _take(candidate, rows)
            sub_h = _take(champion, rows)
            try:
                test = paired_test(
                    task,
                    metric,
                    ys,
                    sub_c,
                    sub_h,
                    positive,
                    None
                    if metric not in ("f1", "precision", "recall")
                    and not (metric == "roc_auc" and _classes(candidate) > 2)
                    else paired_bootstrap(
                        task, [metric], ys, sub_c, sub_h, positive, resamples, seed
                    )[metric],
                )
                c = point_metrics(task, [metric], ys, sub_c, positive)[metric]
                h = point_metrics(task, [metric], ys, sub_h, positive)[metric]
                info |= {
                    "candidate": c,
                    "champion": h,
                    "improvement": h - c if metric in LOWER_IS_BETTER else c - h,
                    "p_harm": test.p_less(-slice_margin),
                    "method": test.record()["method"],
                }
            except ValueError as exc:  # e.g. one class only: AUC undefined in this slice
                info["note"] = f"not tested: {exc}"
        results.append((name, int(rows.size), info))
    adjusted = holm([r[2].get("p_harm", math.nan) for r in results])
    alpha = 1.0 - confidence
    slices = [
        SliceResult(
            slice=name,
            rows=rows,
            candidate=info.get("candidate"),
            champion=info.get("champion"),
            improvement=info.get("improvement"),
            p_harm=info.get("p_harm"),
            p_harm_holm=None if math.isnan(adj) else float(adj),
            method=info["method"],
            harmed=bool(not math.isnan(adj) and adj < alpha),
            note=info["note"],
        )
        for (name, rows, info), adj in zip(results, adjusted, strict=True)
    ]
    return SliceReport(column, metric, slice_margin, confidence, min_rows, slices)


# --- helpers ---------------------------------------------------------------------------------


def _take(scored: Scored, rows: np.ndarray) -> Scored:
    return Scored(
        np.asarray(scored.pred)[rows], None if scored.proba is None else scored.proba[rows]
    )


def _classes(scored: Scored) -> int:
    return 0 if scored.proba is None else int(scored.proba.shape[1])


def _check_y(task: Task, y: np.ndarray) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"y: expected a non-empty 1-d array; found shape {arr.shape}")
    return arr.astype(np.float64) if task == "regression" else arr.astype(np.int64)


def _check_same_rows(y: np.ndarray, *models: Scored) -> None:
    for name, s in zip(("candidate", "champion"), models, strict=False):
        if np.asarray(s.pred).shape[0] != y.size:
            raise ValueError(
                f"{name}: {np.asarray(s.pred).shape[0]} predictions for {y.size} test rows; "
                "both models must be scored on the same rows"
            )


def _positive(task: Task, scored: Scored, positive: int | None) -> int | None:
    if task == "regression":
        return None
    k = _classes(scored)
    if k == 2 or (k == 0 and positive is not None):
        return 1 if positive is None else positive
    return None


def _labels(task: Task, y: np.ndarray, *models: Scored) -> np.ndarray:
    if task == "regression":
        return np.empty(0, dtype=np.int64)
    seen = [y] + [np.asarray(s.pred, np.int64) for s in models]
    return np.unique(np.concatenate(seen))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v
