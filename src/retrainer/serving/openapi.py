"""The OpenAPI document, built from what is being served.

Each served model gets its own operations with its request bodies taken from the loaded
version's signature (column names, types, nullability, int64 bounds), so the schema says
exactly which requests are accepted; it is rebuilt when a reload installs another version.
"""

from __future__ import annotations

from typing import Any

from retrainer.serving.metrics import DECISIONS
from retrainer.serving.model import LoadedModel
from retrainer.serving.rollout import MODES
from retrainer.serving.routes.feedback import MAX_LABELS
from retrainer.serving.signature import json_schema
from retrainer.serving.state import ServingState

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
MLFLOW_ERROR = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error_code", "message"],
}
WHY = {
    400: "Not valid JSON, or a bad X-Request-ID",
    401: "Missing or wrong bearer token",
    404: "No such model, version or request id",
    413: "Body over the size limit",
    415: "Content-Type not accepted here",
    422: "Well-formed JSON the model or route cannot take (the message names the field)",
    500: "A version failed to load (the old one keeps serving; a challenger is not installed)",
    503: "Model not loaded, or the log spool is full (Retry-After)",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *errors: int, mlflow: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", **ok}}
    for code in errors:
        out[str(code)] = {"description": WHY[code], **_json(MLFLOW_ERROR if mlflow else ERROR)}
    return out


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, **_json(schema)}


def payload_schema(handle: LoadedModel, max_rows: int) -> dict[str, Any]:
    row = json_schema(handle.columns, max_rows)
    rows = {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}
    names = handle.column_names
    split = {
        "type": "object",
        "properties": {
            "columns": {"const": names},
            "index": {
                "type": "array",
                "items": {"type": ["string", "number"]},
                "description": "row labels (pandas' split orient); not used",
            },
            "data": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_rows,
                "items": {
                    "type": "array",
                    "prefixItems": [row["properties"][n] for n in names],
                    "minItems": len(names),
                    "maxItems": len(names),
                },
            },
        },
        "required": ["columns", "data"],
        "additionalProperties": False,
    }
    options = [
        {
            "type": "object",
            "properties": {key: rows},
            "required": [key],
            "additionalProperties": False,
        }
        for key in ("rows", "dataframe_records", "instances", "inputs")
    ]
    options.append(
        {
            "type": "object",
            "properties": {"dataframe_split": split},
            "required": ["dataframe_split"],
            "additionalProperties": False,
        }
    )
    return {
        "description": "Rows in retrainer's or any of MLflow's JSON scoring formats",
        "oneOf": options,
    }


def _label_schema(handle: LoadedModel) -> dict[str, Any]:
    if handle.classes is None:
        return {"type": "number"}
    return {"enum": [c.item() if hasattr(c, "item") else c for c in handle.classes]}


def _model_paths(state: ServingState, h: LoadedModel) -> dict[str, Any]:
    name = h.name
    predicted = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "model_version": {"type": "string"},
            "request_id": {"type": "string"},
            "predictions": {"type": "array"},
        },
        "required": ["model", "model_version", "request_id", "predictions"],
    }
    item = {
        "type": "object",
        "properties": {
            "request_id": {"type": "string", "description": "as the /predict answer gave it"},
            "row": {"type": "integer", "minimum": 0, "default": 0},
            "label": _label_schema(h),
        },
        "required": ["request_id", "label"],
        "additionalProperties": False,
    }
    labels = {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_LABELS}
        },
        "required": ["labels"],
        "additionalProperties": False,
    }
    drift = {
        "type": "object",
        "properties": {
            "decision": {"enum": list(DECISIONS)},
            "psi": {
                "type": "object",
                "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            },
            "triggered": {"type": "boolean"},
        },
        "additionalProperties": False,
    }
    accepted = {"type": "object", "properties": {"accepted": {}}, "required": ["accepted"]}
    rollout_status = _json(ROLLOUT_STATUS)
    return {
        f"/models/{name}": {
            "get": {
                "summary": f"The version of {name} being served and its inputs",
                "operationId": f"model_info_{name}",
                "responses": _responses(_json({"type": "object"}), 401, 404, 503),
            }
        },
        f"/models/{name}/predict": {
            "post": {
                "summary": f"Predict with {name} (the request is logged before it is answered)",
                "operationId": f"predict_{name}",
                "parameters": [_client_id_header()],
                "requestBody": _body(payload_schema(h, state.max_rows)),
                "responses": _responses(_json(predicted), 400, 401, 404, 413, 415, 422, 503),
            }
        },
        f"/models/{name}/feedback": {
            "post": {
                "summary": f"Ground-truth labels for answered {name} requests",
                "operationId": f"feedback_{name}",
                "requestBody": _body({"oneOf": [item, labels]}),
                "responses": _responses(_json(accepted), 400, 401, 404, 413, 415, 422, 503),
            }
        },
        f"/models/{name}/drift": {
            "post": {
                "summary": f"The monitor reports a check of {name} (admin token)",
                "operationId": f"drift_{name}",
                "requestBody": _body(drift),
                "responses": _responses(_json(accepted), 400, 401, 404, 413, 415, 422),
            }
        },
        f"/models/{name}/rollout": {
            "get": {
                "summary": f"The rollout of {name} in progress (mode none if there is none)",
                "operationId": f"rollout_{name}",
                "responses": _responses(rollout_status, 401, 404),
            },
            "put": {
                "summary": f"Start a shadow or canary step of a {name} challenger (admin token)",
                "operationId": f"start_rollout_{name}",
                "requestBody": _body(_rollout_body(h)),
                "responses": _responses(rollout_status, 400, 401, 404, 413, 415, 422, 500, 503),
            },
            "delete": {
                "summary": f"End the rollout of {name}: its final stats, the challenger out",
                "operationId": f"end_rollout_{name}",
                "responses": _responses(rollout_status, 401, 404),
            },
        },
    }


def _rollout_body(h: LoadedModel) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "challenger": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.-]{1,255}$",
                "description": "a version number or an alias of this model",
                "examples": ["champion"],
            },
            "mode": {"enum": list(MODES)},
            "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "key": {
                "anyOf": [{"enum": h.column_names}, {"type": "null"}],
                "description": "the column the canary split hashes (null: the request id)",
            },
        },
        "required": ["challenger", "mode", "fraction"],
        "additionalProperties": False,
    }


_ROLE = {
    "type": "object",
    "properties": {
        "requests": {"type": "integer"},
        "rows": {"type": "integer"},
        "errors": {"type": "integer"},
        "fallbacks": {"type": "integer"},
        "predict_p99_ms": {"type": ["number", "null"]},
    },
    "required": ["requests", "rows", "errors", "predict_p99_ms"],
}
ROLLOUT_STATUS = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "mode": {"enum": ["none", *MODES]},
        "champion": {"type": ["string", "null"]},
        "challenger": {"type": ["string", "null"]},
        "fraction": {"type": "number"},
        "key": {"type": ["string", "null"]},
        "step_started": {"type": ["string", "null"]},
        "stats": {
            "type": "object",
            "properties": {
                "champion": _ROLE,
                "challenger": _ROLE,
                "mirrored": {
                    "type": "object",
                    "properties": {
                        "rows": {"type": "integer"},
                        "dropped": {"type": "integer"},
                        "agree": {"type": "integer"},
                        "disagree_by_class": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                        "mean_abs_rel_diff": {"type": ["number", "null"]},
                    },
                },
                "paired_latency": {
                    "type": "object",
                    "description": "shadow: both versions timed on the same mirrored rows",
                    "properties": {
                        "calls": {"type": "integer"},
                        "challenger_p99_ms": {"type": ["number", "null"]},
                        "champion_p99_ms": {"type": ["number", "null"]},
                    },
                },
            },
            "required": ["champion", "challenger", "mirrored"],
        },
    },
    "required": ["model", "mode", "champion", "challenger", "fraction", "key", "stats"],
}


def _client_id_header() -> dict[str, Any]:
    return {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "the client's own id, kept beside the server's",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:/+=@-]{1,128}$"},
    }


def build(state: ServingState, default_model: str | None) -> dict[str, Any]:
    obj = {"type": "object"}
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness (no token)",
                "operationId": "health",
                "security": [],
                "responses": _responses(_json(obj)),
            }
        },
        "/ready": {
            "get": {
                "summary": "Models loaded and the log spools' state",
                "operationId": "ready",
                "responses": {
                    **_responses(_json(obj), 401),
                    "503": {"description": WHY[503], **_json(obj)},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": _responses(
                    {"content": {"text/plain": {"schema": {"type": "string"}}}}, 401
                ),
            }
        },
        "/models": {
            "get": {
                "summary": "The models being served",
                "operationId": "models",
                "responses": _responses(_json(obj), 401),
            }
        },
        "/reload": {
            "post": {
                "summary": "Load the champion (or a version or alias) of one model or of all",
                "operationId": "reload",
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "model": {"enum": list(state.model_names)},
                            "version": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,255}$"},
                        },
                        "dependentRequired": {"version": ["model"]},
                        "additionalProperties": False,
                    },
                    required=False,
                ),
                "responses": _responses(_json(obj), 400, 401, 404, 413, 415, 422, 500),
            }
        },
        "/flush": {
            "post": {
                "summary": "Compact the spooled logs now; the rows written",
                "operationId": "flush",
                "responses": _responses(_json(obj), 401),
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": _responses(_json(obj), 401),
            }
        },
    }
    for h in sorted(state.models.values(), key=lambda h: h.name):
        paths.update(_model_paths(state, h))
    if default_model and default_model in state.models:
        h = state.models[default_model]
        answer = {
            "type": "object",
            "properties": {"predictions": {"type": "array"}},
            "required": ["predictions"],
        }
        paths["/invocations"] = {
            "post": {
                "summary": f"MLflow's scoring protocol for {default_model} (JSON or CSV)",
                "operationId": "invocations",
                "parameters": [_client_id_header()],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": payload_schema(h, state.max_rows)},
                        "text/csv": {
                            "schema": {"type": "string"},
                            "example": ",".join(h.column_names) + "\n",
                        },
                    },
                },
                "responses": _responses(_json(answer), 400, 401, 404, 413, 415, 503, mlflow=True),
            }
        }
        paths["/ping"] = {
            "get": {
                "summary": "MLflow's liveness probe (no token)",
                "operationId": "ping",
                "security": [],
                "responses": _responses(_json(obj)),
            }
        }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "retrainer serving", "version": "1"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if state.tokens():
        doc["security"] = [{"bearer": []}]
    admin = ("/reload", "/flush")
    models = state.models
    for path in (*admin, *(f"/models/{n}/{op}" for n in models for op in ("drift", "rollout"))):
        for op in paths.get(path, {}).values():
            op["security"] = [{"bearer": []}]
    return doc
