"""Is a feature's drift more than sampling noise? Tests on bucket counts, corrected across features.

PSI says how *large* a shift is, not whether the window could have come from the reference
population: with many buckets and a small window, PSI from noise alone is about
(B - 1) * (1/n + 1/m) (``drift.noise_floor``), so a 50-category column in a 200-row window
crosses 0.25 half the time with no drift at all. Here each feature's bucket counts (reference
vs window, a 2 x B table) get a test of homogeneity:

- Pearson's chi-square when every expected count is at least 5 (Cochran's rule), the usual
  asymptotic test (a G-test on request);
- otherwise, where buckets are sparse and the asymptotic distribution is wrong, Fisher's exact
  test for two buckets and a Monte-Carlo p-value for more: the window's counts are redrawn under
  H0 from the multivariate hypergeometric distribution with both margins fixed (the exact
  conditional null of the table), the Pearson statistic recomputed; ``(1 + hits) / (1 + draws)``,
  with more draws while the p-value is small (so that it stays resolvable after a correction
  across features). In ``drift_rule`` only features past the PSI limit get the extra draws:
  the others cannot trigger, and their one-round p-values (at least 1/1,001) only rank them.

``drift_rule`` then applies the monitor's rule: a feature drifts when its PSI passes the limit
**and** its p-value, Benjamini-Hochberg-adjusted across the features in the trigger, is at most
``fdr``; features left out of the trigger are reported but never trigger.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats

from retrainer.core.multiplicity import benjamini_hochberg

if TYPE_CHECKING:
    from retrainer.core.drift import DriftResult

TestMethod = Literal["auto", "chi2", "g_test", "monte_carlo", "fisher_exact"]
Counts = Sequence[float] | np.ndarray
MIN_EXPECTED = 5.0
MC_FIRST = 1_000  # Monte-Carlo draws in the first round
MC_MAX = 1_000_000  # at most this many draws in all (p-values resolvable down to 1e-6)
MC_MIN_HITS = 10  # fewer hits than this: draw 10x more, up to MC_MAX


@dataclass(frozen=True)
class BucketTest:
    """The homogeneity test of one feature's reference vs window bucket counts."""

    method: str
    statistic: float
    dof: int
    p_value: float
    buckets: int  # buckets with any row on either side
    min_expected: float
    resamples: int = 0  # Monte-Carlo draws (0: not Monte-Carlo)

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


def counts_from_shares(shares: Sequence[float], rows: int) -> np.ndarray:
    """Bucket counts back from stored shares (a profile keeps shares of ``rows`` rows)."""
    return np.rint(np.asarray(shares, dtype=np.float64) * rows).astype(np.int64)


def _table(reference: Counts, current: Counts) -> np.ndarray:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise ValueError(
            f"bucket counts: reference and current need the same buckets; found {ref.shape} "
            f"and {cur.shape}"
        )
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("bucket counts: expected counts >= 0; found a negative count")
    keep = (ref + cur) > 0
    return np.vstack([ref[keep], cur[keep]])


def _pearson(cur: np.ndarray, col: np.ndarray, n_ref: float, n_cur: float) -> np.ndarray:
    """Pearson's X^2 of 2 x B tables given the current row(s) and fixed margins."""
    total = n_ref + n_cur
    e_cur = col * (n_cur / total)
    e_ref = col * (n_ref / total)
    ref = col - cur
    return np.sum((cur - e_cur) ** 2 / e_cur + (ref - e_ref) ** 2 / e_ref, axis=-1)


def bucket_test(
    reference: Counts,
    current: Counts,
    method: TestMethod = "auto",
    seed: int = 0,
    min_expected: float = MIN_EXPECTED,
    resolution: float = 1e-3,
) -> BucketTest:
    """Homogeneity of two rows of bucket counts (reference, current); see the module doc.

    ``resolution``: the smallest p-value that has to be told apart (e.g. fdr / features):
    Monte-Carlo draws grow tenfold while fewer than 10 simulated tables are as extreme as the
    observed one, up to 2 / resolution draws (at most 1,000,000), where a p-value with no
    simulated table as extreme is resolution / 2. Every such p-value is valid (never below the
    exact one in expectation), whatever the number of draws.
    """
    max_resamples = int(min(MC_MAX, max(MC_FIRST, math.ceil(2.0 / resolution))))
    table = _table(reference, current)
    n_ref, n_cur = float(table[0].sum()), float(table[1].sum())
    buckets = table.shape[1]
    if n_ref == 0 or n_cur == 0 or buckets < 2:
        return BucketTest(method if method != "auto" else "none", 0.0, 0, 1.0, buckets, math.nan)
    col = table.sum(axis=0)
    expected = np.outer([n_ref, n_cur], col) / (n_ref + n_cur)
    smallest = float(expected.min())
    if method == "auto":
        if smallest >= min_expected:
            method = "chi2"
        else:
            method = "fisher_exact" if buckets == 2 else "monte_carlo"
    dof = buckets - 1
    if method == "chi2":
        stat = float(_pearson(table[1], col, n_ref, n_cur))
        return BucketTest("chi2", stat, dof, float(stats.chi2.sf(stat, dof)), buckets, smallest)
    if method == "g_test":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(table > 0, table * np.log(table / expected), 0.0)
        stat = float(2.0 * terms.sum())
        return BucketTest("g_test", stat, dof, float(stats.chi2.sf(stat, dof)), buckets, smallest)
    if method == "fisher_exact":
        if buckets != 2:
            raise ValueError(f"fisher_exact: expected 2 buckets; found {buckets}")
        res = stats.fisher_exact(table.astype(np.int64))
        stat = float(_pearson(table[1], col, n_ref, n_cur))
        return BucketTest("fisher_exact", stat, dof, float(res.pvalue), buckets, smallest)
    if method != "monte_carlo":
        raise ValueError(
            f"method: expected auto, chi2, g_test, monte_carlo or fisher_exact; found {method!r}"
        )
    observed = float(_pearson(table[1], col, n_ref, n_cur))
    p, draws = _monte_carlo(observed, col, int(n_ref), int(n_cur), seed, max_resamples)
    return BucketTest("monte_carlo", observed, dof, p, buckets, smallest, draws)


def _monte_carlo(
    observed: float, col: np.ndarray, n_ref: int, n_cur: int, seed: int, max_resamples: int
) -> tuple[float, int]:
    """p-value of X^2 under the exact conditional null (fixed margins), adaptive draw count."""
    rng = np.random.default_rng(seed)
    colors = col.astype(np.int64)
    hits = draws = 0
    target = MC_FIRST
    tol = 1e-9 * max(observed, 1.0)  # the observed table itself counts as a hit
    while True:
        while draws < target:  # in slices: 1M draws of 50 buckets would be 400 MB at once
            size = min(100_000, target - draws)
            sims = rng.multivariate_hypergeometric(colors, n_cur, size=size, method="marginals")
            hits += int(np.count_nonzero(_pearson(sims, colors, n_ref, n_cur) >= observed - tol))
            draws += size
        if hits >= MC_MIN_HITS or draws >= max_resamples:
            break
        target = min(draws * 10, max_resamples)
    return (1.0 + hits) / (1.0 + draws), draws


# --- the monitor's rule ----------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSignificance:
    name: str
    psi: float | None
    test: BucketTest | None
    p_adjusted: float | None  # Benjamini-Hochberg across the features in the trigger
    large: bool  # PSI >= the limit
    significant: bool  # adjusted p <= fdr
    in_trigger: bool  # False: the spec leaves this feature out of the trigger
    drifted: bool  # large and significant and in the trigger
    noise_floor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: _finite(v) for k, v in asdict(self).items() if k != "test"}
        d["test"] = self.test.to_dict() if self.test else None
        return d


@dataclass(frozen=True)
class DriftSignificance:
    features: dict[str, FeatureSignificance]
    psi_limit: float
    fdr: float
    excluded: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """Features that drifted, largest PSI first."""
        hits = [f for f in self.features.values() if f.drifted]
        return [f.name for f in sorted(hits, key=lambda f: -(f.psi or 0.0))]

    @property
    def large_only(self) -> list[str]:
        """PSI past the limit but not significant: what a PSI-only rule would have fired on."""
        return [
            f.name for f in self.features.values() if f.large and f.in_trigger and not f.drifted
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "psi_limit": self.psi_limit,
            "fdr": self.fdr,
            "excluded": list(self.excluded),
            "drifted": self.drifted,
            "features": {k: v.to_dict() for k, v in self.features.items()},
        }


def drift_rule(
    counts: Mapping[str, tuple[Counts, Counts]],
    psi: Mapping[str, float | None],
    psi_limit: float,
    fdr: float = 0.01,
    excluded: Iterable[str] = (),
    seed: int = 0,
    tests: Mapping[str, BucketTest] | None = None,
) -> DriftSignificance:
    """PSI limit AND significance (BH across the features in the trigger) per feature.

    ``counts`` maps each feature to (reference counts, window counts) over the same buckets;
    ``psi`` its PSI (None or NaN: not comparable, e.g. a schema problem: never drifts).
    ``tests`` reuses tests already made (e.g. the CLI and the monitor share one computation).
    """
    if not 0 < fdr < 1:
        raise ValueError(f"fdr: expected a false discovery rate in (0, 1); found {fdr}")
    out_of_trigger = set(excluded)
    unknown = sorted(out_of_trigger - set(counts))
    if unknown:
        raise ValueError(
            f"excluded features {unknown} are not among the monitored features {sorted(counts)}"
        )
    names = list(counts)
    done: dict[str, BucketTest | None] = {}
    for i, name in enumerate(names):
        value = psi.get(name)
        if value is None or not math.isfinite(value):
            done[name] = None
        elif tests and name in tests:
            done[name] = tests[name]
        else:  # first one round of Monte-Carlo draws where buckets are sparse
            ref, cur = counts[name]
            done[name] = bucket_test(ref, cur, seed=seed + i, resolution=1.0)
    family = [n for n in names if done[n] is not None and n not in out_of_trigger]

    def adjust() -> dict[str, float]:
        adjusted = benjamini_hochberg([done[n].p_value for n in family])  # type: ignore[union-attr]
        return dict(zip(family, adjusted.tolist(), strict=True))

    # Then more draws only where they can change the verdict: a feature past the PSI limit,
    # not yet significant, whose p-value rests on fewer than 10 simulated tables as extreme.
    # It needs resolving down to its BH threshold if it were the next discovery,
    # fdr * (discoveries + 1) / features. (Features under the limit cannot trigger; their
    # coarser p-values only make BH stricter for the others.)
    adj = adjust()
    for _ in range(len(family)):
        found = sum(1 for n in family if adj[n] <= fdr)
        need = fdr * (found + 1) / max(len(family), 1)
        todo = [
            n
            for n in family
            if psi[n] >= psi_limit  # type: ignore[operator]
            and adj[n] > fdr
            and done[n].method == "monte_carlo"  # type: ignore[union-attr]
            and done[n].p_value * (1 + done[n].resamples) < 1 + MC_MIN_HITS  # type: ignore[union-attr]
            and done[n].resamples < min(MC_MAX, math.ceil(2.0 / need))  # type: ignore[union-attr]
        ]
        if not todo:
            break
        for n in todo:
            ref, cur = counts[n]
            done[n] = bucket_test(ref, cur, seed=seed + names.index(n), resolution=need)
        adj = adjust()
    features: dict[str, FeatureSignificance] = {}
    for name in names:
        value = psi.get(name)
        finite = value is not None and math.isfinite(value)
        large = bool(finite and value >= psi_limit)  # type: ignore[operator]
        p_adj = adj.get(name)
        significant = p_adj is not None and p_adj <= fdr
        in_trigger = name not in out_of_trigger
        ref, cur = counts[name]
        n_ref, n_cur = float(np.sum(ref)), float(np.sum(cur))
        buckets = int(np.count_nonzero(np.asarray(ref, float) + np.asarray(cur, float)))
        floor = (buckets - 1) * (1 / n_cur + 1 / n_ref) if n_ref and n_cur and buckets else None
        features[name] = FeatureSignificance(
            name=name,
            psi=float(value) if finite else None,  # type: ignore[arg-type]
            test=done[name],
            p_adjusted=p_adj,
            large=large,
            significant=significant,
            in_trigger=in_trigger,
            drifted=large and significant and in_trigger,
            noise_floor=floor,
        )
    return DriftSignificance(features, psi_limit, fdr, sorted(out_of_trigger))


def drift_significance(
    drift: DriftResult,
    psi_limit: float,
    fdr: float,
    excluded: Iterable[str] = (),
    seed: int = 0,
) -> DriftSignificance:
    """``drift_rule`` on a ``compare_to_profile`` result (counts from its shares and sizes)."""
    counts: dict[str, tuple[Counts, Counts]] = {}
    psi: dict[str, float | None] = {}
    for name, f in drift.features.items():
        if not f.reference:  # Evidently mode keeps no buckets: nothing to test
            continue
        counts[name] = (
            counts_from_shares(f.reference, drift.rows_reference),
            counts_from_shares(f.current, drift.rows_current),
        )
        psi[name] = None if f.problem else f.psi
    known = [e for e in excluded if e in counts]
    return drift_rule(counts, psi, psi_limit, fdr=fdr, excluded=known, seed=seed)


def persistent(history: Sequence[Iterable[str]], consecutive: int) -> list[str]:
    """Features that drifted in each of the last ``consecutive`` windows (newest last)."""
    if consecutive < 1:
        raise ValueError(f"consecutive: expected at least 1; found {consecutive}")
    if len(history) < consecutive:
        return []
    recent = [set(h) for h in history[-consecutive:]]
    return sorted(set.intersection(*recent))


def weighted_drift(psi: Mapping[str, float | None], importance: Mapping[str, float]) -> float:
    """PSI averaged with the champion's feature importances as weights (features in both)."""
    pairs = [
        (max(importance[k], 0.0), v)
        for k, v in psi.items()
        if k in importance and v is not None and math.isfinite(v)
    ]
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total if total > 0 else math.nan


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
