"""Reference profiles and the Population Stability Index (PSI), vectorised over all features.

PSI compares two distributions bucket by bucket:

    PSI = sum over buckets b of (cur_b - ref_b) * ln(cur_b / ref_b)

where ref_b and cur_b are the shares of rows in bucket b. 0 means identical; by the usual rule
of thumb < 0.1 is stable, 0.1-0.25 a moderate shift, > 0.25 a major one.

Two methods:

- ``quantile`` (default, what the monitor uses): buckets come from the *reference profile*
  stored with the model at training time: for a numeric feature the reference's quantile bin
  edges (``psi_bins`` bins, right-closed, open outer edges, so any value lands somewhere), for a
  categorical feature its categories plus one bucket for categories unseen in training; nulls
  are always their own bucket. An empty bucket on either side counts as ``EPSILON`` (1e-4)
  instead of 0, which keeps ln() finite and caps one empty bucket's contribution at about
  share * ln(share / 1e-4). The monitor never re-reads the training data: counting the current
  window is a few vectorised comparisons per feature.
- ``evidently``: Evidently 0.7's own PSI, reproduced exactly (to 1e-9) so results can be
  cross-checked against the peer: nulls and infinities dropped; numeric columns with more than
  20 distinct reference values get Sturges bins over reference + current together; other columns
  are compared value by value; a zero share becomes 1e-4, or the smallest non-zero share / 1e6
  if that is smaller.

Sampling noise: with B buckets, n current and m reference rows, PSI between two samples of the
*same* population is about (B - 1) * (1/n + 1/m) on average. `noise_floor()` reports it, so a
threshold can be checked against the window size before it causes false alarms.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

EPSILON = 1e-4
NULL_BUCKET = "<null>"
UNSEEN_BUCKET = "<unseen>"
PROFILE_VERSION = 1
# Evidently compares numeric columns value by value when the reference has this many or fewer.
EVIDENTLY_MAX_DISCRETE = 20
# A numeric feature whose non-null values are more than this share unparseable changed type.
TYPE_CHANGE_SHARE = 0.05

Kind = Literal["numeric", "categorical"]
Method = Literal["quantile", "evidently"]


class Table(Protocol):
    """What the quantile path reads of a table: a DataFrame, or columns read from a file on
    demand (``stores.storage.read_columns``: numeric columns as float64 arrays, others as
    Series), so two large files never have to be in memory at once."""

    @property
    def columns(self) -> Any: ...

    @property
    def dtypes(self) -> Any: ...

    def __len__(self) -> int: ...

    def __getitem__(self, name: Any) -> Any: ...


@dataclass
class FeatureProfile:
    """One feature of the reference: buckets and the share of reference rows in each."""

    kind: Kind
    count: int
    null_share: float
    edges: list[float] = field(default_factory=list)  # numeric: inner edges, right-closed bins
    categories: list[str] = field(default_factory=list)  # categorical
    shares: list[float] = field(default_factory=list)  # per bucket, nulls last (sum 1)

    def bucket_labels(self) -> list[str]:
        if self.kind == "numeric":
            bounds = ["-inf", *(format(e, ".6g") for e in self.edges), "+inf"]
            labels = [f"({lo}, {hi}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            labels[-1] = f"({bounds[-2]}, +inf)"
            return [*labels, NULL_BUCKET]
        return [*self.categories, UNSEEN_BUCKET, NULL_BUCKET]


@dataclass
class ReferenceProfile:
    """What the monitor needs to know about the training data, and nothing else."""

    features: dict[str, FeatureProfile]
    rows: int
    bins: int
    created: str = ""
    version: int = PROFILE_VERSION
    # Set at training time from the test split (absent in older profiles):
    importance: dict[str, float] = field(default_factory=dict)  # permutation importance
    calibration: dict[str, Any] | None = None  # core.cbpe.Calibration, binary classifiers
    reference_metric: dict[str, Any] | None = (
        None  # {"metric", "value", "positive"} on the test split
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": self.rows,
            "bins": self.bins,
            "created": self.created,
            "features": {k: asdict(v) for k, v in self.features.items()},
            "importance": dict(self.importance),
            "calibration": self.calibration,
            "reference_metric": self.reference_metric,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceProfile:
        return cls(
            features={k: FeatureProfile(**v) for k, v in d["features"].items()},
            rows=int(d["rows"]),
            bins=int(d["bins"]),
            created=str(d.get("created", "")),
            version=int(d.get("version", PROFILE_VERSION)),
            importance={k: float(v) for k, v in (d.get("importance") or {}).items()},
            calibration=d.get("calibration"),
            reference_metric=d.get("reference_metric"),
        )

    @property
    def numeric(self) -> list[str]:
        return [k for k, f in self.features.items() if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [k for k, f in self.features.items() if f.kind == "categorical"]


# --- building the profile --------------------------------------------------------------------


def _as_float(values: Any) -> np.ndarray:
    """A column as float64 with nulls as NaN (numbers that arrive as strings are parsed)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return np.asarray(values, dtype=np.float64)  # no copy for float64, no pandas
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if s.dtype.kind in "biuf":
        return np.asarray(s, dtype=np.float64)
    return np.asarray(pd.to_numeric(s, errors="coerce"), dtype=np.float64)


def _as_category(values: Any) -> np.ndarray:
    """A column as an object array of strings, None for nulls (1 and "1" are one category)."""
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(values)
    out = s.astype(object).where(s.notna(), None)
    mask = out.notna()
    if s.dtype.kind in "OSU" and pd.api.types.infer_dtype(out[mask], skipna=True) == "string":
        return np.asarray(out, dtype=object)  # already strings: nothing to convert
    out[mask] = out[mask].map(_category_key)
    return np.asarray(out, dtype=object)


def _category_key(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


_DATETIME_TEXT = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)(.*)")
_MIDNIGHT = re.compile(r"00:00:00(?:\.0+)?")


def _canonical(text: str) -> str:
    """One spelling of a date or time however it was written: a timestamp (`str()` of a Parquet
    datetime), pandas' CSV (a column of midnights as dates only) and ISO 8601 with `T` (JSON
    traffic). A naive midnight is the date alone, any other time `date time[zone]`. Applied to
    each distinct value, on both sides of a comparison and to stored profiles' categories."""
    m = _DATETIME_TEXT.fullmatch(text)
    if m is None:
        return text
    day, clock, zone = m.groups()
    if not zone and _MIDNIGHT.fullmatch(clock):
        return day
    if "." in clock:  # .500000 (a timestamp) and .500 (pandas' CSV) alike
        clock = clock.rstrip("0").rstrip(".")
    return f"{day} {clock}{zone}"


def quantile_edges(x: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges at the reference's quantiles; ties merge bins (a constant gives one edge)."""
    finite = x if np.isfinite(x).all() else x[np.isfinite(x)]
    if finite.size == 0:
        return np.empty(0)
    return np.unique(quantiles(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


QUANTILE_SAMPLE = 50_000  # a seeded sample brackets each order statistic on large columns
QUANTILE_Z = 5.0  # the bracket's half-width in standard errors of the sample quantile


def quantiles(x: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """``np.quantile(x, qs)`` (linear method) exactly, faster on large finite columns.

    numpy selects the two order statistics around each quantile from the whole column (a
    partition with two ranks per quantile). Here a seeded sample of the column brackets each
    pair of ranks between two values; one count of the values below the bracket and a partition
    of the few inside it give the same order statistics, so the result is bit-identical. Where a
    bracket misses its ranks (possible, not likely: 5 standard errors) numpy decides.
    """
    n = x.size
    if n < 4 * QUANTILE_SAMPLE:
        return np.quantile(x, qs)
    virtual = (n - 1) * qs  # numpy's linear method, the same operations in the same order
    below_rank = np.floor(virtual)
    gamma = virtual - below_rank
    lo_rank = below_rank.astype(np.int64)
    hi_rank = np.minimum(lo_rank + 1, n - 1)
    rng = np.random.default_rng(0)
    sample = np.sort(x[rng.integers(0, n, QUANTILE_SAMPLE)])
    p = lo_rank / (n - 1)
    half = QUANTILE_Z * np.sqrt(p * (1 - p) / QUANTILE_SAMPLE) + 2.0 / QUANTILE_SAMPLE
    last = QUANTILE_SAMPLE - 1
    start = sample[np.clip(np.floor((p - half) * last).astype(np.int64), 0, last)]
    stop = sample[np.clip(np.ceil((p + half) * last).astype(np.int64), 0, last)]
    lo, hi = np.empty(qs.size), np.empty(qs.size)
    for j in range(qs.size):
        below = np.count_nonzero(x < start[j])
        inside = x[(x >= start[j]) & (x <= stop[j])]
        k0, k1 = lo_rank[j] - below, hi_rank[j] - below
        if k0 < 0 or k1 >= inside.size:
            return np.quantile(x, qs)
        part = np.partition(inside, [k0, k1])
        lo[j], hi[j] = part[k0], part[k1]
    # numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) from t = 0.5 on
    diff = hi - lo
    return np.where(gamma >= 0.5, hi - diff * (1 - gamma), lo + diff * gamma)


def numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per right-closed bin (open outer edges), then nulls; NaN is null.

    Cumulative counts of x <= edge need one comparison per edge and no sort or index array:
    for a handful of edges that beats searchsorted + bincount by several times.
    """
    nulls = int(np.count_nonzero(np.isnan(x)))
    valid = x.size - nulls
    if edges.size == 0:
        return np.array([valid, nulls], dtype=np.int64)
    if edges.size <= 64:
        cum = np.fromiter((np.count_nonzero(x <= e) for e in edges), np.int64, edges.size)
    else:
        finite = x[~np.isnan(x)]
        cum = np.searchsorted(np.sort(finite), edges, side="right").astype(np.int64)
    counts = np.diff(np.concatenate(([0], cum, [valid])))
    return np.concatenate((counts, [nulls]))


def categorical_counts(x: np.ndarray, categories: list[str]) -> np.ndarray:
    """Counts per known category, then unseen categories, then nulls."""
    return _categorical_counts(x, categories)[0]


def _categorical_counts(x: np.ndarray, categories: list[str]) -> tuple[np.ndarray, list[str]]:
    """(counts per known category, unseen, nulls; the unseen values, most frequent first)."""
    import pandas as pd

    vc = pd.Series(x, dtype=object).value_counts(dropna=False)
    counts = np.zeros(len(categories) + 2, dtype=np.int64)
    index = {_canonical(c): i for i, c in enumerate(categories)}
    unseen: list[str] = []
    for value, n in vc.items():  # one entry per distinct value, most frequent first
        if value is None or (isinstance(value, float) and math.isnan(value)):
            counts[-1] += int(n)
        elif (key := _canonical(str(value))) in index:
            counts[index[key]] += int(n)
        else:
            counts[-2] += int(n)
            unseen.append(str(value))
    return counts, unseen


def build_profile(
    df: Table, numeric: list[str], categorical: list[str], bins: int = 10
) -> ReferenceProfile:
    """The reference profile of a training frame."""
    features: dict[str, FeatureProfile] = {}
    n = len(df)
    for col in numeric:
        x = _as_float(df[col])
        edges = quantile_edges(x, bins)
        counts = numeric_counts(x, edges)
        features[col] = FeatureProfile(
            kind="numeric",
            count=n,
            null_share=float(counts[-1] / n) if n else 0.0,
            edges=[float(e) for e in edges],
            shares=_shares(counts).tolist(),
        )
    for col in categorical:
        x = _as_category(df[col])
        present = sorted({_canonical(v) for v in {v for v in x if v is not None}})
        counts = categorical_counts(x, present)
        features[col] = FeatureProfile(
            kind="categorical",
            count=n,
            null_share=float(counts[-1] / n) if n else 0.0,
            categories=present,
            shares=_shares(counts).tolist(),
        )
    return ReferenceProfile(
        features=features, rows=n, bins=bins, created=datetime.now(UTC).isoformat()
    )


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(counts.size)


# --- PSI -------------------------------------------------------------------------------------


def psi_from_shares(ref: np.ndarray, cur: np.ndarray, epsilon: float = EPSILON) -> float:
    ref = np.where(ref > 0, ref, epsilon)
    cur = np.where(cur > 0, cur, epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def noise_floor(buckets: int, n_current: int, n_reference: int) -> float:
    """Expected PSI between two samples of one population (chi-square approximation)."""
    if n_current <= 0 or n_reference <= 0:
        return math.inf
    return (buckets - 1) * (1.0 / n_current + 1.0 / n_reference)


@dataclass
class FeatureDrift:
    name: str
    kind: Kind
    psi: float
    buckets: list[str]
    reference: list[float]
    current: list[float]
    null_share_reference: float
    null_share_current: float
    unseen: list[str] = field(default_factory=list)  # a few unseen categories, most frequent first
    problem: str = ""  # set when the feature cannot be compared: schema change, all null

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["psi"] = _finite(self.psi)
        return d


@dataclass
class DriftResult:
    method: Method
    rows_reference: int
    rows_current: int
    features: dict[str, FeatureDrift]

    @property
    def psi(self) -> dict[str, float]:
        return {k: f.psi for k, f in self.features.items() if not f.problem}

    @property
    def problems(self) -> dict[str, str]:
        return {k: f.problem for k, f in self.features.items() if f.problem}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows_reference": self.rows_reference,
            "rows_current": self.rows_current,
            "features": {k: f.to_dict() for k, f in self.features.items()},
        }


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def compare_to_profile(profile: ReferenceProfile, current: Table) -> DriftResult:
    """PSI of every profiled feature of `current` against the reference profile.

    Never raises on bad data: a missing column, a numeric column that arrives as text, or a
    column that is entirely null where the reference was not, is reported as the feature's
    `problem` (a schema change), and its PSI is not part of any drift verdict.
    """
    n = len(current)
    features: dict[str, FeatureDrift] = {}
    for name, fp in profile.features.items():
        labels = fp.bucket_labels()
        ref = np.asarray(fp.shares, dtype=np.float64)
        problem = ""
        unseen: list[str] = []
        if name not in current.columns:
            problem = "missing from the current data"
            counts = np.zeros(ref.size, dtype=np.int64)
        elif fp.kind == "numeric":
            column = current[name]  # read once (a column table reads it from the file)
            x = _as_float(column)
            if not (isinstance(column, np.ndarray) and column.dtype.kind in "biuf"):
                problem = _type_change(column, x)  # numbers parse as numbers: no change
            counts = numeric_counts(x, np.asarray(fp.edges, dtype=np.float64))
        else:
            counts, unseen = _categorical_counts(_as_category(current[name]), fp.categories)
            unseen = unseen[:5]
        cur = _shares(counts)
        null_cur = float(counts[-1] / n) if n else 0.0
        if not problem and n and null_cur == 1.0 and fp.null_share < 0.5:
            problem = f"all {n} values are null (reference: {fp.null_share:.1%} null)"
        psi = psi_from_shares(ref, cur) if n and not problem else math.nan
        features[name] = FeatureDrift(
            name=name,
            kind=fp.kind,
            psi=psi,
            buckets=labels,
            reference=[float(v) for v in ref],
            current=[float(v) for v in cur],
            null_share_reference=fp.null_share,
            null_share_current=null_cur,
            unseen=unseen,
            problem=problem,
        )
    return DriftResult("quantile", profile.rows, n, features)


def _type_change(column: pd.Series, parsed: np.ndarray) -> str:
    """A numeric feature whose values mostly arrive as text: the problem, else ''."""
    raw_nonnull = int(column.notna().sum())
    unparsed = raw_nonnull - int(np.count_nonzero(~np.isnan(parsed)))
    if not raw_nonnull or unparsed / raw_nonnull <= TYPE_CHANGE_SHARE:
        return ""
    example = column[column.notna()].iloc[0]
    return (
        f"type changed: {unparsed} of {raw_nonnull} values are not numbers "
        f"(e.g. {str(example)[:40]!r})"
    )


# --- Evidently's PSI, exactly ----------------------------------------------------------------


def _evidently_fill(p: np.ndarray) -> np.ndarray:
    nonzero = p[p != 0]
    if nonzero.size == 0:
        return p
    low = nonzero.min()
    fill = low / 10**6 if low <= 0.0001 else 0.0001
    return np.where(p == 0, fill, p)


def _more_unique_than(x: np.ndarray, limit: int) -> bool:
    """x has more than `limit` distinct values; a small prefix usually proves it at once."""
    if np.unique(x[:4096]).size > limit:
        return True
    return bool(np.unique(x).size > limit)


def _sturges_bins(ref: np.ndarray, cur: np.ndarray, integer: bool) -> tuple[int, float, float]:
    """numpy.histogram_bin_edges(concat(ref, cur), "sturges") without building the concat."""
    first = float(min(ref.min(), cur.min()))
    last = float(max(ref.max(), cur.max()))
    if first == last:
        first, last = first - 0.5, last + 0.5
    size = ref.size + cur.size
    # numpy: np.ptp(data) / (np.log2(data.size) + 1.0); np.ptp is last - first exactly here.
    width = float(np.float64(last - first) / (np.log2(np.float64(size)) + 1.0))
    if integer and width < 1:
        width = 1.0
    n_bins = int(np.ceil((last - first) / width)) if width else 1
    return n_bins, first, last


def _finite_values(col: pd.Series) -> np.ndarray:
    if col.dtype.kind in "iuf" and isinstance(col.dtype, np.dtype):
        x = np.asarray(col, dtype=np.float64)  # no copy for float64
    else:
        x = _as_float(col)
    finite = np.isfinite(x)
    return x if finite.all() else x[finite]


def evidently_column_psi(ref_col: pd.Series, cur_col: pd.Series, kind: Kind) -> float:
    """Evidently 0.7's PSI for one column (ValueDrift with method="psi")."""
    import pandas as pd

    if kind == "numeric":
        # Evidently: infinities become NaN, NaN is dropped. Done on the numpy arrays directly.
        integer = ref_col.dtype.kind in "iu" and cur_col.dtype.kind in "iu"
        ref = _finite_values(ref_col)
        cur = _finite_values(cur_col)
        if ref.size == 0 or cur.size == 0:
            return math.nan
        if _more_unique_than(ref, EVIDENTLY_MAX_DISCRETE):
            n_bins, first, last = _sturges_bins(ref, cur, integer)
            # Equal-width bins over a given range take numpy's fast path; the counts equal
            # np.histogram(x, edges) with edges = linspace(first, last, n_bins + 1).
            ref_counts = np.histogram(ref, bins=n_bins, range=(first, last))[0]
            cur_counts = np.histogram(cur, bins=n_bins, range=(first, last))[0]
            ref_p = _evidently_fill(ref_counts / ref.size)
            cur_p = _evidently_fill(cur_counts / cur.size)
            return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))
        ref_keys, ref_n = np.unique(ref, return_counts=True)
        cur_keys, cur_n = np.unique(cur, return_counts=True)
        keys = np.union1d(ref_keys, cur_keys)
        ref_counts = np.zeros(keys.size)
        cur_counts = np.zeros(keys.size)
        ref_counts[np.searchsorted(keys, ref_keys)] = ref_n
        cur_counts[np.searchsorted(keys, cur_keys)] = cur_n
        ref_len, cur_len = ref.size, cur.size
    else:
        ref_s, cur_s = ref_col.dropna(), cur_col.dropna()
        if ref_s.empty or cur_s.empty:
            return math.nan
        ref_len, cur_len = len(ref_s), len(cur_s)
        ref_vc = pd.Series(ref_s).value_counts()
        cur_vc = pd.Series(cur_s).value_counts()
        both = ref_vc.index.union(cur_vc.index)
        ref_counts = ref_vc.reindex(both, fill_value=0).to_numpy(dtype=np.float64)
        cur_counts = cur_vc.reindex(both, fill_value=0).to_numpy(dtype=np.float64)
    ref_p = _evidently_fill(ref_counts / ref_len)
    cur_p = _evidently_fill(cur_counts / cur_len)
    return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))


# --- comparing two tables (the CLI, the benchmark) -------------------------------------------


def infer_kinds(df: Any, columns: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Numeric dtypes are numeric features; everything else is categorical.

    ``df``: a DataFrame, or any table with ``columns`` and ``dtypes`` (a column table reading a
    file); ``columns``: the columns to type (default all)."""
    columns = list(df.columns) if columns is None else columns
    numeric = [c for c in columns if df.dtypes[c].kind in "iuf"]
    categorical = [c for c in columns if c not in numeric]
    return numeric, categorical


def compare_frames(
    reference: Table,
    current: Table,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    bins: int = 10,
    method: Method = "quantile",
) -> DriftResult:
    """PSI per feature of two tables; columns in both, typed by dtype unless given."""
    if numeric is None or categorical is None:
        common = [c for c in reference.columns if c in current.columns]
        inferred_num, inferred_cat = infer_kinds(reference, common)
        numeric = inferred_num if numeric is None else numeric
        categorical = inferred_cat if categorical is None else categorical
    if method == "quantile":
        return compare_to_profile(build_profile(reference, numeric, categorical, bins), current)
    if method != "evidently":
        raise ValueError(f"method: expected quantile or evidently; found {method!r}")
    features: dict[str, FeatureDrift] = {}
    for name, kind in [
        *((c, "numeric") for c in numeric),
        *((c, "categorical") for c in categorical),
    ]:
        problem = "" if name in current.columns else "missing from the current data"
        psi = math.nan
        if not problem:
            psi = evidently_column_psi(reference[name], current[name], kind)  # type: ignore[arg-type]
            if math.isnan(psi):
                problem = "no non-null values on one side"
        features[name] = FeatureDrift(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            psi=psi,
            buckets=[],
            reference=[],
            current=[],
            null_share_reference=_null_share(reference[name]),
            null_share_current=_null_share(current[name]) if name in current.columns else 0.0,
            problem=problem,
        )
    return DriftResult("evidently", len(reference), len(current), features)


MIN_BINS = 2
MISSING_IN_REFERENCE = "missing from the reference data"


def compare_tables(
    reference: Table,
    current: Table,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    bins: int = 10,
    method: Method = "quantile",
) -> DriftResult:
    """`compare_frames` for two tables a person hands over (the `retrainer drift` command).

    Refuses what cannot give a meaningful PSI: fewer than two bins, an empty reference (nothing
    to compare against) or an empty current table. Every column on either side is compared
    (or every listed feature): one missing on either side is the feature's `problem`, so the
    verdict is a schema change that names it, never a quiet `ok`.
    """
    from retrainer.errors import DataError

    if method == "quantile" and (isinstance(bins, bool) or bins < MIN_BINS):
        raise ValueError(
            f"bins: expected at least {MIN_BINS} quantile bins per numeric feature; found "
            f"{bins} (with fewer, every value shares one bin and PSI is always 0)"
        )
    if len(reference) == 0:
        raise DataError(
            "the reference table has no rows: there is nothing to compare the current data "
            "with; pass the training data (or a sample of it) as the reference"
        )
    if len(current) == 0:
        raise DataError("the current table has no rows: there is no traffic to compare")
    if numeric is None or categorical is None:
        in_ref_num, in_ref_cat = infer_kinds(reference)
        only_cur = [c for c in current.columns if c not in reference.columns]
        cur_num, cur_cat = infer_kinds(current, only_cur)
        numeric = [*in_ref_num, *cur_num] if numeric is None else numeric
        categorical = [*in_ref_cat, *cur_cat] if categorical is None else categorical
    absent = [c for c in [*numeric, *categorical] if c not in reference.columns]
    result = compare_frames(
        reference,
        current,
        [c for c in numeric if c not in absent],
        [c for c in categorical if c not in absent],
        bins=bins,
        method=method,
    )
    for name in absent:
        present = name in current.columns
        result.features[name] = FeatureDrift(
            name=name,
            kind="numeric" if name in numeric else "categorical",
            psi=math.nan,
            buckets=[],
            reference=[],
            current=[],
            null_share_reference=0.0,
            null_share_current=_null_share(current[name]) if present else 0.0,
            problem=MISSING_IN_REFERENCE if present else "missing from both tables",
        )
    return result


def _null_share(column: Any) -> float:
    if isinstance(column, np.ndarray) and column.dtype.kind in "biuf":
        return float(np.isnan(column).mean()) if column.size else 0.0
    return float(column.isna().mean()) if len(column) else 0.0


def verdict(psi: float, warn: float, retrain: float) -> str:
    if math.isnan(psi):
        return "n/a"
    if psi >= retrain:
        return "retrain"
    if psi >= warn:
        return "warn"
    return "ok"
