"""The serving edge's pure parts: signature checks, payload parsing, signed request ids."""

from __future__ import annotations

import pytest

from retrainer.serving.http import RequestIds
from retrainer.serving.signature import (
    Column,
    InputError,
    SchemaMismatch,
    check_rows,
    json_schema,
    parse_payload,
)

COLUMNS = [
    Column("Age", "long", True),
    Column("Income", "double", False),
    Column("Home", "string", True),
]
ROW = {"Age": 30, "Income": 1.5, "Home": "rent"}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"Age": 2**63}, "'Age' holds 9223372036854775808, which does not fit a 64-bit integer"),
        ({"Income": -(2**64)}, "'Income' holds"),
        ({"Age": "thirty"}, "'Age' expects a number"),
        ({"Age": 3.5}, "'Age' expects an integer"),
        ({"Age": True}, "'Age' expects a number"),
        ({"Income": float("inf")}, "'Income' is infinite"),
        ({"Home": 3}, "'Home' expects a string"),
        ({"Age": None}, "'Age' is null/NaN"),
    ],
)
def test_values_the_signature_types_cannot_hold_are_refused_naming_the_field(change, needle):
    with pytest.raises(SchemaMismatch) as err:
        check_rows(COLUMNS, [dict(ROW, **change)], 10)
    assert needle in str(err.value)


def test_values_beyond_the_specs_validation_bounds_are_accepted():
    check_rows(COLUMNS, [dict(ROW, Age=140, Income=None), dict(ROW, Age=3.0)], 10)


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": "Age", "data": []}},
        {"dataframe_split": {"columns": ["Age"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": ["Age"], "data": [[1]], "extra": 1}},
        {"dataframe_split": {"columns": ["Age"], "data": [[1]], "index": [{}]}},
        {"rows": [ROW], "instances": [ROW]},
        {"rows": [ROW], "params": {}},
        {"inputs": {"Age": [1, 2], "Home": ["a"]}},
        {"rows": 5},
        "text",
    ],
)
def test_malformed_payloads_are_input_errors(body):
    with pytest.raises(InputError):
        check_rows(COLUMNS, parse_payload(body), 10)


def test_every_payload_format_gives_the_same_rows():
    split = {"columns": list(ROW), "data": [list(ROW.values())], "index": [0]}
    for body in (
        {"rows": [ROW]},
        {"dataframe_records": [ROW]},
        {"instances": [ROW]},
        {"inputs": {k: [v] for k, v in ROW.items()}},
        {"dataframe_split": split},
    ):
        assert parse_payload(body) == [ROW]


def test_the_json_schema_says_what_is_accepted():
    schema = json_schema(COLUMNS, 10)
    assert schema["properties"]["Age"] == {
        "type": "integer",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }
    assert {"type": "null"} in schema["properties"]["Income"]["anyOf"]
    assert schema["additionalProperties"] is False and schema["required"] == list(ROW)


def test_request_ids_prove_the_model_and_the_row_count():
    ids = RequestIds("secret")
    rid = ids.issue("credit", 3)
    assert ids.rows("credit", rid) == 3
    assert ids.rows("other_model", rid) is None  # never another model's request
    assert RequestIds("another-key").rows("credit", rid) is None
    nonce, _, mac = rid.split("-")
    assert ids.rows("credit", f"{nonce}-ff-{mac}") is None  # row count tampered with
    assert ids.rows("credit", "req-1") is None and ids.issue("credit", 3) != rid


def test_request_ids_carry_their_answer_time_and_older_ids_stay_valid():
    import hashlib
    import hmac

    ids = RequestIds("secret")
    rid = ids.issue("credit", 2, now=1_780_000_000.7)
    assert ids.check("credit", rid) == (2, 1_780_000_000.0)
    nonce, rows, mac = rid.split("-")
    assert len(nonce) == 24  # 8 hex of time, 64 random bits: no more collisions than before
    later = f"{int(nonce[:8], 16) + 86_400:08x}{nonce[8:]}"
    assert ids.check("credit", f"{later}-{rows}-{mac}") is None  # the time is under the MAC
    # An id issued before answer times were kept: a random 16-hex nonce.
    key = hashlib.sha256(b"retrainer-request-id:secret").digest()
    old_nonce = "0123456789abcdef"
    old_mac = hmac.new(key, b"credit\x000123456789abcdef\x003", hashlib.sha256).hexdigest()[:16]
    assert ids.check("credit", f"{old_nonce}-3-{old_mac}") == (3, None)
    assert ids.rows("credit", f"{old_nonce}-3-{old_mac}") == 3
