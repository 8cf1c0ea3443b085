"""Data validation: a Great Expectations suite built from the spec, and a readable report.

The suite is first built as plain data (`build_expectations`), so it can be shown and tested
without GX; `validate_frame` runs it with the real GX (ephemeral context, pandas) and keeps what
a person needs from the result: what was expected, what was observed, what to do.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.spec import ModelSpec

NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64",
    "UInt8", "UInt16", "UInt32", "UInt64", "Float32", "Float64",
]  # fmt: skip


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    description: str
    kwargs: dict[str, Any]
    success: bool
    observed: str
    spec_key: str = ""  # the spec key to relax if the data legitimately changed
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    row_count: int
    columns: list[str]
    results: list[ExpectationOutcome]
    source: str = ""

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self) | {"failed": len(self.failures)})

    def summary(self) -> str:
        if self.success:
            return f"all {len(self.results)} expectations passed on {self.row_count} rows"
        where = f" at {self.source}" if self.source else ""
        lines = [f"{len(self.failures)} failed expectation(s) on {self.row_count} rows{where}:"]
        for r in self.failures:
            lines.append(f"  - {r.column or '(table)'}: {r.description}; observed {r.observed}")
        keys = sorted({r.spec_key for r in self.failures if r.spec_key})
        lines.append(
            f"What to do: fix the batch{where}, or, if the data legitimately changed, relax "
            + (", ".join(f"`{k}`" for k in keys) if keys else "the validation block")
            + " in the model spec, then trigger again."
        )
        return "\n".join(lines)

    def to_html(self, title: str) -> str:
        rows = []
        for r in sorted(self.results, key=lambda r: r.success):
            cls = "ok" if r.success else "fail"
            rows.append(
                f'<tr class="{cls}"><td class="status">{"passed" if r.success else "FAILED"}</td>'
                f"<td>{html.escape(r.column or '(table)')}</td><td>{html.escape(r.description)}</td>"
                f"<td>{html.escape(r.observed)}</td><td><code>{html.escape(r.expectation)}</code></td>"
                f"<td><code>{html.escape(r.spec_key)}</code></td></tr>"
            )
        n_fail = len(self.failures)
        banner = (
            f"PASSED: all {len(self.results)} expectations met"
            if self.success
            else f"FAILED: {n_fail} of {len(self.results)} expectations not met"
        )
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.45 -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d2330; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
.meta {{ color: #5b6475; margin-bottom: 16px; }}
.banner {{ padding: 12px 16px; border-radius: 6px; font-weight: 600; margin-bottom: 16px; }}
.banner.ok {{ background: #e6f4ea; color: #1e6b34; border: 1px solid #b7dfc2; }}
.banner.fail {{ background: #fdecea; color: #a4271b; border: 1px solid #f5c2bc; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e6ec; vertical-align: top; }}
th {{ background: #f4f6f9; font-weight: 600; }}
tr.fail td {{ background: #fff6f5; }}
tr.fail td.status {{ color: #a4271b; font-weight: 700; }}
tr.ok td.status {{ color: #1e6b34; }}
code {{ font-size: 12px; color: #44506a; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="meta">{self.row_count:,} rows &middot; {len(self.columns)} columns &middot; Great Expectations suite built from the model spec</div>
<div class="banner {"ok" if self.success else "fail"}">{banner}</div>
<table><thead><tr><th>status</th><th>column</th><th>expectation</th><th>observed</th><th>GX type</th><th>spec key</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</body></html>
"""


def feature_columns(spec: ModelSpec, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical): the spec's lists, else every column but target/ignore by dtype."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    feats = spec.data.features
    if feats is not None and (feats.numeric or feats.categorical):
        return list(feats.numeric), list(feats.categorical)
    skip = {spec.data.target, *spec.data.ignore}
    numeric, categorical = [], []
    for col in df.columns:
        if col in skip:
            continue
        series = df[col]
        if is_numeric_dtype(series) and not is_bool_dtype(series):
            numeric.append(str(col))
        else:
            categorical.append(str(col))
    return numeric, categorical


def required_columns(
    spec: ModelSpec,
    numeric: Sequence[str],
    categorical: Sequence[str],
    expected_columns: Sequence[str] = (),
) -> dict[str, str]:
    """Every column a batch must have, with the spec key that makes it required.

    The features (listed, or inferred from the batch), the target, every column the spec's
    validation block names (unless it says `required: false`), and `expected_columns`: the
    current champion's inputs when the spec lets features be inferred, so a batch that silently
    lost one fails here rather than as a KeyError three tasks later.
    """
    listed = spec.data.features is not None and bool(
        spec.data.features.numeric or spec.data.features.categorical
    )
    out: dict[str, str] = {}
    for col in [*numeric, *categorical]:
        out[col] = f"data.features ({col})" if listed else f"inferred feature ({col})"
    out[spec.data.target] = "data.target"
    for col, check in spec.validation.columns.items():
        if check.required:
            out.setdefault(col, f"validation.columns.{col}")
    for col in expected_columns:
        out.setdefault(
            col,
            f"the champion's inputs ({col}); to drop it on purpose, list data.features without it",
        )
    return out


def build_expectations(
    spec: ModelSpec, df: pd.DataFrame, expected_columns: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The suite as data: {type, kwargs, column, description, spec_key}.

    `expected_columns`: columns the batch must have beyond the spec's (the champion's inputs).
    """
    from pandas.api.types import is_numeric_dtype

    v = spec.validation
    numeric, categorical = feature_columns(spec, df)
    target = spec.data.target
    checks = v.columns
    exp: list[dict[str, Any]] = [
        {
            "type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": v.min_rows},
            "column": None,
            "description": f"at least {v.min_rows:,} rows",
            "spec_key": "validation.min_rows",
        }
    ]
    for col, key in required_columns(spec, numeric, categorical, expected_columns).items():
        exp.append(
            {
                "type": "expect_column_to_exist",
                "kwargs": {"column": col},
                "column": col,
                "description": "column is present",
                "spec_key": key,
            }
        )
    if spec.task == "classification" and target in df.columns:
        exp.extend(_class_expectations(spec, df[target]))
    present = set(df.columns)
    numeric_set = set(numeric)
    for col in dict.fromkeys([*numeric, *categorical, target, *checks]):
        if col not in present:
            continue  # the existence check above reports it; nothing else can be checked
        check = checks.get(col)
        is_numeric_col = col in numeric_set
        if is_numeric_col:
            exp.append(
                {
                    "type": "expect_column_values_to_be_in_type_list",
                    "kwargs": {"column": col, "type_list": NUMERIC_TYPES},
                    "column": col,
                    "description": "numeric type",
                    "spec_key": f"data.features.numeric ({col})",
                }
            )
        default_null = 0.0 if col == target else v.max_null_fraction
        max_null = (
            check.max_null_fraction
            if check and check.max_null_fraction is not None
            else default_null
        )
        key = (
            f"validation.columns.{col}.max_null_fraction"
            if check and check.max_null_fraction is not None
            else ("the target column" if col == target else "validation.max_null_fraction")
        )
        if max_null < 1.0:
            exp.append(
                {
                    "type": "expect_column_values_to_not_be_null",
                    "kwargs": {"column": col, "mostly": round(1.0 - max_null, 10)},
                    "column": col,
                    "description": f"at most {max_null:.0%} null",
                    "spec_key": key,
                }
            )
        if check is None:
            continue
        if (check.min is not None or check.max is not None) and (
            is_numeric_dtype(df[col]) or not is_numeric_col
        ):
            kwargs: dict[str, Any] = {"column": col}
            parts = []
            if check.min is not None:
                kwargs["min_value"] = check.min
                parts.append(f">= {check.min:g}")
            if check.max is not None:
                kwargs["max_value"] = check.max
                parts.append(f"<= {check.max:g}")
            exp.append(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": kwargs,
                    "column": col,
                    "description": "values " + " and ".join(parts),
                    "spec_key": f"validation.columns.{col}.min/max",
                }
            )
        if check.allowed is not None:
            exp.append(
                {
                    "type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": col, "value_set": list(check.allowed)},
                    "column": col,
                    "description": f"values in {list(check.allowed)}",
                    "spec_key": f"validation.columns.{col}.allowed",
                }
            )
    return exp


def _class_expectations(spec: ModelSpec, y: pd.Series) -> list[dict[str, Any]]:
    """A classifier needs two classes, and a binary one (a positive class given) exactly two,
    one of them its positive class, in every batch: a stray third label ("Bad" beside "bad")
    would make a three-class model whose roc_auc the binary gate cannot read."""
    target = spec.data.target
    wanted = spec.data.positive_class
    kwargs: dict[str, Any] = {"column": target, "min_value": 2}
    description = "at least 2 classes (a classifier cannot learn from one)"
    if wanted is not None:
        kwargs["max_value"] = 2
        description = "exactly 2 classes (data.positive_class makes it a binary classifier)"
    exp: list[dict[str, Any]] = [
        {
            "type": "expect_column_unique_value_count_to_be_between",
            "kwargs": kwargs,
            "column": target,
            "description": description,
            "spec_key": "data.target",
        }
    ]
    if wanted is not None:
        # Matched as the evaluation matches it: 1 and "1" are one class.
        found = [c for c in y.dropna().unique() if c == wanted or str(c) == str(wanted)]
        exp.append(
            {
                "type": "expect_column_distinct_values_to_contain_set",
                "kwargs": {"column": target, "value_set": [found[0] if found else wanted]},
                "column": target,
                "description": f"the positive class {wanted!r} occurs",
                "spec_key": "data.positive_class",
            }
        )
    return exp


def _classes_found(series: pd.Series, limit: int = 10) -> str:
    classes = sorted(map(str, series.dropna().unique()))
    more = f" and {len(classes) - limit} more" if len(classes) > limit else ""
    return f"{len(classes)} class(es) in {series.name!r}: {classes[:limit]}{more}"


def _gx_class(snake: str) -> Any:
    import great_expectations.expectations as gxe

    return getattr(gxe, "".join(p.capitalize() for p in snake.split("_")))


def validate_frame(
    df: pd.DataFrame, spec: ModelSpec, source: str = "", expected_columns: Sequence[str] = ()
) -> ValidationReport:
    """Run the spec's suite with Great Expectations on a DataFrame.

    `expected_columns`: columns that must exist beyond the spec's (the champion's inputs, when
    the spec's features are inferred)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    planned = build_expectations(spec, df, expected_columns)
    context = gx.get_context(mode="ephemeral")
    # GX's progress bars would flood the Airflow task log.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas(name="retrainer").add_dataframe_asset(name=spec.name)
    batch = asset.add_batch_definition_whole_dataframe("batch").get_batch(
        batch_parameters={"dataframe": df}
    )
    suite = gx.ExpectationSuite(name=f"{spec.name}_suite")
    for e in planned:
        suite.add_expectation(_gx_class(e["type"])(**e["kwargs"]))
    result = batch.validate(suite, result_format="SUMMARY")
    # GX does not keep the suite's order: match results to the plan by (type, column).
    by_key = {
        (cfg.type, cfg.kwargs.get("column")): r
        for r in result.results
        if (cfg := r.expectation_config) is not None
    }

    outcomes = []
    for e in planned:
        r = by_key[(e["type"], e["column"])]
        raw = _json_safe(dict(r.result or {}))
        exc = r.exception_info or {}
        raised = bool(exc.get("raised_exception")) if isinstance(exc, dict) else False
        observed = _observed(e, raw, df, bool(r.success), exc if raised else None)
        outcomes.append(
            ExpectationOutcome(
                expectation=e["type"],
                column=e["column"],
                description=e["description"],
                kwargs=_json_safe(e["kwargs"])
                if e["type"] != "expect_column_values_to_be_in_type_list"
                else {"column": e["column"], "type_list": "numeric"},
                success=bool(r.success),
                observed=observed,
                spec_key=e["spec_key"],
                details={
                    k: raw[k]
                    for k in (
                        "observed_value",
                        "unexpected_count",
                        "unexpected_percent",
                        "partial_unexpected_list",
                    )
                    if k in raw
                },
            )
        )
    return ValidationReport(
        success=all(o.success for o in outcomes),
        row_count=int(len(df)),
        columns=[str(c) for c in df.columns],
        results=outcomes,
        source=source,
    )


def _observed(e: dict[str, Any], raw: dict[str, Any], df: pd.DataFrame, ok: bool, exc: Any) -> str:
    col = e["column"]
    kind = e["type"]
    if kind == "expect_table_row_count_to_be_between":
        return f"{len(df):,} rows"
    if kind == "expect_column_to_exist":
        return "present" if ok else "column is missing"
    if exc is not None:
        return f"could not be checked: {str(exc.get('exception_message', ''))[:200]}"
    series = df[col]
    n = len(series)
    if kind == "expect_column_unique_value_count_to_be_between":
        if ok:
            return _classes_found(series)
        if e["kwargs"].get("max_value") == 2 and series.dropna().nunique() > 2:
            return (
                f"{_classes_found(series)}; expected exactly 2 (data.positive_class: a binary "
                "classifier): correct the stray labels, or leave positive_class out for a "
                "multi-class model"
            )
        return f"{_classes_found(series)}; expected at least 2"
    if kind == "expect_column_distinct_values_to_contain_set":
        found = _classes_found(series)
        return found if ok else f"{found}; {e['kwargs']['value_set'][0]!r} is not among them"
    if kind == "expect_column_values_to_be_in_type_list":
        dtype = str(series.dtype)
        if ok:
            return dtype
        sample = [v for v in series.dropna().unique()[:200] if isinstance(v, str)][:3]
        return f"type {dtype}; expected a numeric type" + (f" (e.g. {sample})" if sample else "")
    if kind == "expect_column_values_to_not_be_null":
        nulls = int(series.isna().sum())
        share = nulls / n if n else 0.0
        shown = f"{share:.2%}" if 0 < share < 0.001 else f"{share:.1%}"
        return f"{shown} null ({nulls:,} of {n:,} rows)" if n else "no rows"
    unexpected = int(raw.get("unexpected_count") or 0)
    examples = raw.get("partial_unexpected_list") or []
    if kind == "expect_column_values_to_be_between":
        import pandas as pd

        values = pd.to_numeric(series, errors="coerce")
        span = (
            f"min {values.min():g}, max {values.max():g}"
            if values.notna().any()
            else "no numeric values"
        )
        if ok:
            return span
        return (
            f"{span}; {unexpected:,} rows out of range, e.g. {sorted(set(map(str, examples)))[:5]}"
        )
    if kind == "expect_column_values_to_be_in_set":
        allowed = set(map(str, e["kwargs"]["value_set"]))
        unknown = sorted(
            {
                str(v)
                for v in series.dropna().unique()
                if str(v) not in allowed and v not in e["kwargs"]["value_set"]
            }
        )
        if ok:
            return f"{series.nunique():,} distinct values, all allowed"
        return f"unexpected values: {unknown[:8]}{' ...' if len(unknown) > 8 else ''} ({unexpected:,} rows)"
    return json.dumps(raw)[:200]


def _json_safe(value: Any) -> Any:
    """numpy scalars and other odd types to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | bool | int | type(None)):
        return value
    if isinstance(value, float):
        return None if value != value else value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)
