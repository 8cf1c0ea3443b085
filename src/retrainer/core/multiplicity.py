"""Adjusted p-values for many tests at once: Holm (family-wise) and Benjamini-Hochberg (FDR).

Both return adjusted p-values in the input order, so a test is rejected at level alpha when its
adjusted p-value is at most alpha; NaN p-values (a test that could not be made) stay NaN and
do not count as tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _valid(pvalues: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values: expected a flat sequence; found shape {p.shape}")
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values: expected values in [0, 1]; found {p[ok].min()}..{p[ok].max()}")
    return p, ok


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: controls the family-wise error rate under any dependence."""
    p, ok = _valid(pvalues)
    out = np.full(p.size, np.nan)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    steps = (m - np.arange(m)) * q[order]
    adjusted = np.minimum(np.maximum.accumulate(steps), 1.0)
    res = np.empty(m)
    res[order] = adjusted
    out[ok] = res
    return out


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjustment: controls the false discovery rate."""
    p, ok = _valid(pvalues)
    out = np.full(p.size, np.nan)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    res = np.empty(m)
    res[order] = adjusted
    out[ok] = res
    return out
