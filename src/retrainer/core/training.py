"""Build the sklearn pipeline from the spec, split deterministically, fit.

Pure functions on DataFrames; MLflow logging lives in `pipeline.py`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from retrainer.constants import ESTIMATOR_API, TRUSTED_MODULE_PREFIXES
from retrainer.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from retrainer.spec import ModelSpec


def load_estimator_class(dotted: str, allowed: Sequence[str] | None = None) -> type:
    """The estimator class a spec names, checked before anything is called.

    The dotted path must lie in an allowed module (checked as a string, before any import), the
    imported object must be a class defined in an allowed module (a re-export of something else
    is refused), and it must have the scikit-learn estimator API. Nothing is instantiated.
    """
    from retrainer.spec import allowed_estimator_modules, estimator_path_problem, in_allowed_module

    allowed = allowed_estimator_modules() if allowed is None else allowed
    problem = estimator_path_problem(dotted, allowed)
    if problem:
        raise SpecError(problem)
    module_name, _, class_name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"model.estimator: cannot import {dotted!r} ({exc}); use a class importable in the "
            "Airflow workers, e.g. sklearn.ensemble.HistGradientBoostingClassifier"
        ) from None
    if not inspect.isclass(obj):
        raise SpecError(
            f"model.estimator: {dotted!r} is a {type(obj).__name__}, not a class; name an "
            "estimator class such as sklearn.ensemble.HistGradientBoostingClassifier"
        )
    if not in_allowed_module(obj.__module__, allowed):
        raise SpecError(
            f"model.estimator: {dotted!r} is {obj.__module__}.{obj.__qualname__}, defined outside "
            f"the allowed modules {list(allowed)}"
        )
    missing = [m for m in ESTIMATOR_API if not callable(getattr(obj, m, None))]
    if missing:
        raise SpecError(
            f"model.estimator: {dotted!r} lacks the scikit-learn estimator API (no "
            f"{', '.join(missing)}); expected a class with {', '.join(ESTIMATOR_API)}"
        )
    return obj


def check_estimator(spec: ModelSpec, allowed: Sequence[str] | None = None) -> type:
    """Import the spec's estimator class and check its API and param names, without calling it."""
    cls = load_estimator_class(spec.model.estimator, allowed)
    try:
        params = inspect.signature(cls).parameters  # the constructor's, not called
    except (TypeError, ValueError):  # no introspectable signature: the fit will tell
        return cls
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls
    unknown = sorted(set(spec.model.params) - set(params) - {"self"})
    if unknown:
        accepted = sorted(
            n
            for n, p in params.items()
            if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL
        )
        raise SpecError(
            f"model.params: {spec.model.estimator} has no parameter(s) {unknown}; "
            f"it accepts {accepted}"
        )
    return cls


def make_estimator(spec: ModelSpec) -> Any:
    cls = check_estimator(spec)
    try:
        return cls(**spec.model.params)
    except TypeError as exc:
        raise SpecError(
            f"model.params: {spec.model.estimator} does not accept these params: {exc}"
        ) from None


def build_pipeline(spec: ModelSpec, numeric: list[str], categorical: list[str]) -> Pipeline:
    """Imputation and scaling for numbers, one-hot for categories (missing is a category)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
        )
    if categorical:
        # Dense output: HistGradientBoosting refuses sparse input.
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    features = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("features", features), ("estimator", make_estimator(spec))])


def prepare_features(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The model's input frame: numeric as float, categories as object (strings, NaN kept)."""
    import pandas as pd

    out = pd.DataFrame(index=df.index)
    for col in numeric:
        out[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in categorical:
        values = df[col]
        out[col] = values.where(values.isna(), values.astype(str)).astype(object)
    return out


def split_frame(df: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split by a hash of each row's content, salted with data.random_state.

    A row lands on the same side in every run, whatever else is in the table. When a folder of
    batches grows, the old test rows stay test rows and the rows the champion trained on stay
    training rows, so the gate never scores the champion on rows it has seen (a random split
    of the grown table would, and would favour the champion). Identical rows share a side.
    For classification, each class is split on its own so both sides keep every class.
    """
    import numpy as np
    import pandas as pd

    canon = pd.DataFrame(index=df.index)
    for col in sorted(df.columns, key=str):  # column order and int-vs-float must not matter
        values = df[col]
        if values.dtype.kind in "biuf":
            canon[str(col)] = values.astype("float64")
        else:
            canon[str(col)] = values.astype(str).where(values.notna(), "<null>")
    key = f"retrainer{spec.data.random_state:07d}"[-16:]
    h = pd.util.hash_pandas_object(canon, index=False, hash_key=key).to_numpy(dtype=np.uint64)
    u = (h % np.uint64(1_000_003)).astype(np.float64) / 1_000_003.0
    is_test = u < spec.data.test_size
    if spec.task == "classification":
        y = df[spec.data.target]
        for label in y.dropna().unique():
            members = (y == label).to_numpy()
            n_test = int(np.count_nonzero(is_test & members))
            if int(members.sum()) >= 2 and (n_test == 0 or n_test == int(members.sum())):
                # A tiny class the hash put all on one side: send its lowest-hash row across.
                idx = np.flatnonzero(members)
                pick = idx[np.argmin(u[idx])]
                is_test[pick] = not is_test[pick]
    return df[~is_test], df[is_test]


def fit_pipeline(
    spec: ModelSpec,
    train: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    threads: int | None = None,
) -> Pipeline:
    """Fit the spec's pipeline; `threads` caps OpenMP and BLAS during the fit (None: as set by
    the environment), so a task never takes more cores than its slot."""
    from threadpoolctl import threadpool_limits

    pipeline = build_pipeline(spec, numeric, categorical)
    X = prepare_features(train, numeric, categorical)
    y = train[spec.data.target]
    with threadpool_limits(limits=threads):
        pipeline.fit(X, y)
    return pipeline


def trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust when loading this model.

    Types from sklearn, numpy and scipy (and from the estimator's own package) are listed
    explicitly; anything else is refused, because a model that needs arbitrary code to load is
    not one we can serve safely.
    """
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    prefixes = TRUSTED_MODULE_PREFIXES + (type(estimator).__module__.split(".")[0] + ".",)
    refused = [t for t in untrusted if not t.startswith(prefixes)]
    if refused:
        raise SpecError(
            f"model.estimator: the fitted model contains types skops will not load safely: {refused}; "
            "use an estimator built from sklearn/numpy/scipy types"
        )
    return sorted(untrusted)


def model_feature_columns(model: Any) -> tuple[list[str], list[str]]:
    """The numeric and categorical columns a fitted pipeline of ours was trained on."""
    features = model.named_steps["features"]
    cols: dict[str, list[str]] = {"numeric": [], "categorical": []}
    for name, _, columns in features.transformers:
        if name in cols:
            cols[name] = list(columns)
    return cols["numeric"], cols["categorical"]
