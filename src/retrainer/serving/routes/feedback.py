"""Late ground truth: labels for answered requests, checked against what was answered."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request

from retrainer.serving.durable_log import SpoolFull
from retrainer.serving.http import HTTPProblem, authorize, read_json
from retrainer.serving.model import LoadedModel
from retrainer.serving.routes.deps import state_of
from retrainer.serving.routes.scoring import RETRY_AFTER
from retrainer.serving.signature import plain

router = APIRouter(include_in_schema=False)
MAX_LABELS = 10_000
SHAPE = 'expected {"request_id": ..., "label": ..., "row": n} or {"labels": [{...}, ...]}'


def check_label(handle: LoadedModel, label: Any, where: str) -> Any:
    """The label as the model's classes hold it (a number for regression), else 422."""
    if handle.classes is None:
        if (
            isinstance(label, bool)
            or not isinstance(label, int | float)
            or not math.isfinite(label)
        ):
            raise HTTPProblem(
                422, f"{where}: label must be a finite number (regression); found {label!r}"
            )
        return float(label)
    classes = [plain(c) for c in handle.classes]
    for c in classes:
        if type(c) is type(label) and c == label:
            return c
    raise HTTPProblem(
        422, f"{where}: label {label!r} is not one of the model's classes {classes[:20]}"
    )


@router.post("/models/{name}/feedback")
async def feedback(name: str, request: Request) -> dict[str, Any]:
    """{"request_id": ..., "label": ..., "row": n} or {"labels": [...]}: all checked, then logged."""
    state = state_of(request)
    authorize(request, state.tokens())
    handle = state.handle_for(name)
    body = await read_json(request, state.options.max_body_bytes, state.options.body_seconds)
    if isinstance(body, dict) and "labels" in body:
        if set(body) != {"labels"}:
            raise HTTPProblem(422, f"{SHAPE}; unexpected keys {sorted(set(body) - {'labels'})}")
        items = body["labels"]
    else:
        items = [body]
    if not isinstance(items, list) or not items or len(items) > MAX_LABELS:
        raise HTTPProblem(422, f"{SHAPE} (1 to {MAX_LABELS} labels)")
    checked: list[tuple[str, int, Any, float | None]] = []
    for i, item in enumerate(items):
        where = f"feedback item {i}"
        if not isinstance(item, dict) or "request_id" not in item or "label" not in item:
            raise HTTPProblem(422, f"{where}: expected keys request_id and label (row optional)")
        extra = set(item) - {"request_id", "label", "row"}
        if extra:
            raise HTTPProblem(422, f"{where}: unexpected keys {sorted(extra)}")
        rid, row = item["request_id"], item.get("row", 0)
        if isinstance(row, float) and row.is_integer():  # 3.0 is the integer 3 in JSON
            row = int(row)
        if not isinstance(rid, str):
            raise HTTPProblem(422, f"{where}: request_id must be a string")
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise HTTPProblem(422, f"{where}: row must be a non-negative integer")
        issued = state.request_ids.check(name, rid)
        if issued is None:
            raise HTTPProblem(
                404,
                f"{where}: no request {rid[:80]!r} was answered by {name}; "
                "send the request_id its /predict answer gave",
            )
        n, answered = issued
        if row >= n:
            raise HTTPProblem(422, f"{where}: row {row} is outside request {rid} ({n} rows)")
        checked.append((rid, row, check_label(handle, item["label"], where), answered))
    try:
        logged = state.log_feedback(handle, checked)
    except SpoolFull as exc:
        raise HTTPProblem(503, f"{exc}; retry later", {"Retry-After": RETRY_AFTER}) from None
    return {"accepted": len(checked), "logged": logged, "duplicates": len(checked) - logged}
