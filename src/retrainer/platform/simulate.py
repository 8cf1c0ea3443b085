"""The traffic simulator: replays real rows to the serving API, and optionally their labels.

Used by `retrainer simulate`, the demo and the tests. Rows go in batches to
`POST /models/<name>/predict`; with labels, each answered batch's ground truth follows to
`POST /models/<name>/feedback` keyed by the request id and row, as a client with delayed labels
would send it. At the end the server is asked to write its buffered logs (`POST /flush`), so a
monitor run right after sees every row.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrainer.config.secrets import api_token, serving_admin_token
from retrainer.errors import SimulationError

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Replay:
    rows: int = 0
    requests: int = 0
    failed: int = 0
    labelled: int = 0
    seconds: float = 0.0
    versions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "requests": self.requests,
            "failed": self.failed,
            "labelled": self.labelled,
            "seconds": round(self.seconds, 3),
            "versions": dict(self.versions),
            "errors": self.errors[:5],
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    import json

    # JSON through pandas: numpy scalars become plain numbers, NaN becomes null.
    return list(json.loads(df.to_json(orient="records")))


def replay(
    url: str,
    model: str,
    data: pd.DataFrame,
    target: str | None = None,
    labels: bool = False,
    rate: float | None = None,
    batch: int = 50,
    token: str | None = None,
    admin_token: str | None = None,
    timeout: float = 30.0,
) -> Replay:
    """Send every row of `data` (the target column removed) at about `rate` rows per second."""
    import httpx

    if batch < 1:
        raise SimulationError(f"batch: expected at least 1 row per request; found {batch}")
    if labels and (not target or target not in data.columns):
        raise SimulationError(
            f"--labels needs the target column {target!r} in the data; found columns {list(data.columns)[:20]}"
        )
    features = data.drop(columns=[target]) if target and target in data.columns else data
    truth = data[target].tolist() if labels and target else []
    headers = {"authorization": f"Bearer {token}"} if token else {}
    result = Replay()
    started = time.monotonic()
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as http:
        for lo in range(0, len(features), batch):
            chunk = features.iloc[lo : lo + batch]
            try:
                resp = http.post(f"/models/{model}/predict", json={"rows": _records(chunk)})
            except httpx.HTTPError as exc:
                raise SimulationError(
                    f"{url}: the serving API did not answer ({type(exc).__name__}); is it up? "
                    "(`retrainer status`)"
                ) from None
            result.requests += 1
            if resp.status_code != 200:
                result.failed += len(chunk)
                result.errors.append(f"HTTP {resp.status_code}: {resp.text[:300]}")
                if resp.status_code in (401, 404):
                    raise SimulationError(f"POST /models/{model}/predict: {result.errors[-1]}")
            else:
                try:
                    body = resp.json()
                    request_id = body["request_id"]
                except (ValueError, KeyError, TypeError):
                    raise SimulationError(
                        f"{url}: /models/{model}/predict answered 200 without a request id "
                        f"({resp.text[:120]!r}): is this retrainer's serving API?"
                    ) from None
                result.rows += len(chunk)
                result.versions[str(body.get("model_version"))] += len(chunk)
                if labels:
                    items = [
                        {"request_id": request_id, "row": i, "label": _plain(y)}
                        for i, y in enumerate(truth[lo : lo + batch])
                        if not _missing(y)
                    ]
                    try:
                        fb = http.post(f"/models/{model}/feedback", json={"labels": items})
                    except httpx.HTTPError as exc:
                        result.errors.append(f"feedback: no answer ({type(exc).__name__})")
                    else:
                        if fb.status_code == 200:
                            result.labelled += len(items)
                        else:
                            result.errors.append(f"feedback HTTP {fb.status_code}: {fb.text[:300]}")
            if rate:
                ahead = (lo + len(chunk)) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        if admin_token:
            try:
                http.post("/flush", headers={"authorization": f"Bearer {admin_token}"})
            except httpx.HTTPError as exc:
                result.errors.append(f"flush: no answer ({type(exc).__name__})")
    result.seconds = time.monotonic() - started
    return result


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def replay_to(spec: Any, data: pd.DataFrame, labels: bool = False, **kwargs: Any) -> Replay:
    """`replay` to this platform's serving API for a model spec, with the configured tokens."""
    from retrainer.config.settings import get_settings

    settings = get_settings()
    return replay(
        settings.serving_url,
        spec.name,
        data,
        target=spec.data.target,
        labels=labels,
        token=api_token(),
        admin_token=serving_admin_token(settings),
        **kwargs,
    )
