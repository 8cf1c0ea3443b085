"""Requests checked against a model version's MLflow signature, in plain Python.

The checks are about what the signature's types can hold (a string in a numeric column, an
integer that does not fit int64), never about the spec's validation bounds: an `Age` of 140 is a
real request and exactly what drift monitoring must see. Rows that pass here can be written to
the inference log under the version's one Arrow schema.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

NUMERIC = {"double", "float", "long", "integer"}
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
FLOAT32_MAX = 3.4028234663852886e38
FORMATS = ("rows", "dataframe_split", "dataframe_records", "instances", "inputs")


class InputError(ValueError):
    """A request the model can't take: answered 4xx with this message."""

    mlflow_code = "BAD_REQUEST"  # what MLflow's scoring server calls it (a body it can't parse)


class SchemaMismatch(InputError):
    """Rows that parse but do not fit the signature (MLflow's schema enforcement error)."""

    mlflow_code = "INVALID_PARAMETER_VALUE"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow schema type: double, long, string, boolean, ...
    required: bool  # False: null allowed (the column had missing values in training)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def shown(value: Any, limit: int = 100) -> str:
    """A client's value in an error message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def check_value(col: Column, value: Any, where: str) -> None:
    """Raise InputError naming the field when `value` can't be held by the column's type."""
    if _is_null(value):
        if col.required:
            raise SchemaMismatch(
                f"{where}: column {col.name!r} is null/NaN, which this model does not allow "
                "(it had no missing values in training)"
            )
        return
    t = col.type
    if t in NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaMismatch(
                f"{where}: column {col.name!r} expects a number ({t}); found {shown(value)}"
            )
        if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            raise SchemaMismatch(
                f"{where}: column {col.name!r} holds {shown(value)}, which does not fit a 64-bit integer"
            )
        if isinstance(value, float) and math.isinf(value):
            raise SchemaMismatch(f"{where}: column {col.name!r} is infinite")
        if t in ("long", "integer"):
            if isinstance(value, float) and not value.is_integer():
                raise SchemaMismatch(
                    f"{where}: column {col.name!r} expects an integer ({t}); found {shown(value)}"
                )
            lo, hi = INT64 if t == "long" else INT32
            if not lo <= value <= hi:
                raise SchemaMismatch(
                    f"{where}: column {col.name!r} holds {value}, outside the {t} range [{lo}, {hi}]"
                )
        elif t == "float" and abs(value) > FLOAT32_MAX:
            raise SchemaMismatch(
                f"{where}: column {col.name!r} holds {value}, too large for float32"
            )
    elif t == "string":
        if not isinstance(value, str):
            raise SchemaMismatch(
                f"{where}: column {col.name!r} expects a string; found {shown(value)}"
            )
    elif t == "boolean" and not isinstance(value, bool):
        raise SchemaMismatch(
            f"{where}: column {col.name!r} expects true/false; found {shown(value)}"
        )


def check_rows(columns: list[Column], rows: list[Any], max_rows: int) -> None:
    """Every row an object with exactly the signature's columns, each value of its type."""
    if not rows:
        raise InputError("no rows in the request; send at least one")
    if len(rows) > max_rows:
        raise InputError(f"too many rows: {len(rows)} > {max_rows}; split the request")
    by_name = {c.name: c for c in columns}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(
                f"row {i}: expected an object of column -> value; found {type(row).__name__}"
            )
        unknown = [k for k in row if k not in by_name]
        if unknown:
            raise SchemaMismatch(
                f"row {i}: unknown column(s) {[k[:100] for k in unknown[:10]]}; the model takes "
                f"{list(by_name)}"
            )
        for col in columns:
            if col.name not in row:
                raise SchemaMismatch(f"row {i}: missing column {col.name!r} ({col.type})")
            check_value(col, row[col.name], f"row {i}")


def parse_payload(body: Any) -> list[Any]:
    """Rows from any of MLflow's JSON scoring formats, or retrainer's own {"rows": [...]}."""
    if not isinstance(body, dict):
        if isinstance(body, list):
            return body
        raise InputError(f"expected a JSON object with one of: {', '.join(FORMATS)}")
    keys = [k for k in FORMATS if k in body]
    if len(keys) != 1:
        raise InputError(
            f"expected exactly one of the keys {', '.join(FORMATS)}; found "
            f"{[k[:100] for k in sorted(body)[:10]]}"
        )
    key = keys[0]
    if len(body) > 1:
        others = [k[:100] for k in sorted(k for k in body if k != key)[:10]]
        raise InputError(f"unexpected key(s) {others} beside {key!r}; send only the rows")
    data = body[key]
    if key == "dataframe_split":
        return _split_rows(data)
    if key == "inputs" and isinstance(data, dict):
        lengths = {len(v) if isinstance(v, list) else 1 for v in data.values()}
        if len(lengths) > 1:
            raise InputError("inputs: every column must have the same number of values")
        n = lengths.pop() if lengths else 0
        return [
            {k: (v[i] if isinstance(v, list) else v) for k, v in data.items()} for i in range(n)
        ]
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise InputError(f"{key}: expected a list of row objects")
    return data


def _split_rows(data: Any) -> list[dict[str, Any]]:
    shape = 'dataframe_split: expected {"columns": [names], "data": [[values], ...]}'
    if not isinstance(data, dict) or "columns" not in data or "data" not in data:
        raise InputError(shape)
    extra = sorted(set(data) - {"columns", "data", "index"})
    if extra:
        raise InputError(f"{shape}; unexpected key(s) {extra[:10]}")
    cols, values = data["columns"], data["data"]
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise InputError(f"{shape}; columns must be a list of strings")
    if len(set(cols)) != len(cols):
        raise InputError(f"dataframe_split: duplicate column names in {cols[:20]}")
    if not isinstance(values, list):
        raise InputError(f"{shape}; data must be a list of lists")
    index = data.get("index", [])  # row labels: not used, but they must be labels
    if not isinstance(index, list) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in index
    ):
        raise InputError("dataframe_split: index, when given, must be a list of row labels")
    out = []
    for i, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(cols):
            found = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"dataframe_split: row {i} has {found} values for {len(cols)} columns")
        out.append(dict(zip(cols, row, strict=True)))
    return out


def parse_csv(body: bytes, schema: Any) -> list[dict[str, Any]]:
    """Rows of a text/csv body, parsed exactly as `mlflow models serve` parses it."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import parse_csv_input

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            # str(), not repr(): the repr holds every byte of the body (a 2 MB body: a 10 MB answer)
            f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc}'"
        ) from None
    try:
        frame = parse_csv_input(csv_input=io.StringIO(text), schema=schema)
    except MlflowException as exc:
        raise InputError(str(exc.message)[:1000]) from None
    return [
        {k: (None if _is_null(v) else plain(v)) for k, v in rec.items()}
        for rec in frame.to_dict(orient="records")
    ]


def plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def json_schema(columns: list[Column], max_rows: int) -> dict[str, Any]:
    """The JSON schema of one row, so the OpenAPI document says exactly what is accepted."""
    props: dict[str, Any] = {}
    for c in columns:
        if c.type in ("long", "integer"):
            lo, hi = INT64 if c.type == "long" else INT32
            s: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi}
        elif c.type in NUMERIC:
            s = {"type": "number"}
        elif c.type == "boolean":
            s = {"type": "boolean"}
        else:
            s = {"type": "string"}
        props[c.name] = s if c.required else {"anyOf": [s, {"type": "null"}]}
    return {
        "type": "object",
        "properties": props,
        "required": [c.name for c in columns],
        "additionalProperties": False,
    }


def arrow_type(mlflow_type: str) -> Any:
    import pyarrow as pa

    return {
        "double": pa.float64(),
        "float": pa.float32(),
        "long": pa.int64(),
        "integer": pa.int32(),
        "boolean": pa.bool_(),
        "string": pa.string(),
        "binary": pa.binary(),
        "datetime": pa.timestamp("us"),
    }.get(mlflow_type, pa.string())
