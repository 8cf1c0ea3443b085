"""What one serving process holds: the loaded versions, their batchers, the two logs, tokens.

Loading a version resolves it in the registry first (a number or an alias of *that* model,
else 404), then loads it off the event loop; installing it is one reference swap, so in-flight
requests keep the version that checked them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from contextlib import suppress
from typing import Any

from retrainer.config.secrets import api_token, serving_admin_token
from retrainer.config.settings import Settings
from retrainer.serving.batcher import Batcher, Pending
from retrainer.serving.durable_log import DurableLog, now_iso
from retrainer.serving.http import HTTPProblem, RequestIds
from retrainer.serving.inference_log import feedback_schema, inference_records, inference_schema
from retrainer.serving.metrics import Metrics
from retrainer.serving.model import LoadedModel, load_version
from retrainer.serving.options import ServingOptions

log = logging.getLogger("retrainer.serving")
VERSION_OR_ALIAS = re.compile(r"[A-Za-z0-9_.-]{1,255}")
STATE_CODES = {"ok": 0, "near_limit": 1, "full": 2}
_NONE = object()


class ServingState:
    def __init__(
        self,
        settings: Settings,
        options: ServingOptions,
        model_names: list[str],
        max_rows: int,
    ) -> None:
        self.settings = settings
        self.options = options
        self.model_names = model_names
        self.max_rows = max_rows
        self.models: dict[str, LoadedModel] = {}
        self.load_errors: dict[str, str] = {}
        self.metrics = Metrics(model_names)
        self.batchers: dict[str, Batcher] = {}
        self.token = api_token()
        self.admin_token = serving_admin_token(settings)
        self.request_ids = RequestIds(self.admin_token)
        self.reload_lock = asyncio.Lock()
        # (request id, row) -> label of recent feedback: a repeated label is not logged twice.
        self.recent_labels: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self.inference_log = self._log(settings.inference_log_root, "requests")
        self.feedback_log = self._log(settings.feedback_root, "feedback")

    def _log(self, root: str, kind: str) -> DurableLog:
        o, m = self.options, self.metrics
        m.spool_limit.labels(kind).set(o.spool_max_bytes)

        def state(name: str, size: int) -> None:
            m.spool_state.labels(kind).set(STATE_CODES[name])
            m.spool_bytes.labels(kind).set(size)

        return DurableLog(
            root,
            kind,
            o.spool_dir,
            max_bytes=o.spool_max_bytes,
            warn_fraction=o.spool_warn_fraction,
            fsync=o.fsync,
            compact_seconds=o.compact_seconds,
            retention_days=o.retention_days,
            retry_max_seconds=o.upload_retry_max_seconds,
            on_written=m.log_rows.labels(kind, "written").inc,
            on_quarantined=m.log_rows.labels(kind, "quarantined").inc,
            on_state=state,
            processes=True,
        )

    @property
    def logs(self) -> tuple[DurableLog, DurableLog]:
        return self.inference_log, self.feedback_log

    def tokens(self, admin: bool = False) -> list[str]:
        return [t for t in (self.token, self.admin_token if admin else None) if t]

    # --- versions ----------------------------------------------------------------------------

    def resolve(self, name: str, version: str | None) -> str | None:
        """The registry version to load: `version` (a number or an alias of this model) or the
        champion; HTTPProblem 404 when the model has no such version."""
        from mlflow.exceptions import MlflowException

        from retrainer.constants import ALIAS_CHAMPION
        from retrainer.stores.tracking import mlflow_client

        client = mlflow_client(self.settings)
        wanted = version or ALIAS_CHAMPION
        if wanted.lower() == "latest":  # MLflow's implicit alias: a moving target, never served
            raise HTTPProblem(
                404, f"{name}: 'latest' is not an alias; give a version number or an alias"
            )
        try:
            if wanted.isdigit():
                mv = client.get_model_version(name, wanted)
            else:
                mv = client.get_model_version_by_alias(name, wanted)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                if version is None:
                    return None
                raise HTTPProblem(
                    404,
                    f"{name} has no version or alias {version!r} in the registry; "
                    "give a version number or an alias such as champion or previous",
                ) from None
            raise
        if mv.name != name:  # never serve another model's version under this name
            raise HTTPProblem(404, f"{version!r} is a version of {mv.name}, not of {name}")
        return str(mv.version)

    def load(self, name: str, version: str | None = None) -> LoadedModel | None:
        resolved = self.resolve(name, version)
        if resolved is None:
            self.load_errors[name] = "no champion registered yet"
            return None
        return load_version(name, resolved, self.settings.tracking_uri)

    def install(self, handle: LoadedModel) -> None:
        self.models[handle.name] = handle  # one reference swap: in-flight requests keep theirs
        self.load_errors.pop(handle.name, None)
        classes = [str(c) for c in handle.classes] if handle.classes is not None else None
        self.metrics.known(handle.name, handle.column_names, classes)
        with suppress(ValueError):
            self.metrics.version.labels(handle.name).set(float(handle.version))
        if handle.name not in self.batchers:
            batcher = Batcher(
                handle.name,
                self._log_batch,
                self.metrics.batch_rows.labels(handle.name).observe,
                log_in_thread=self.options.fsync,
            )
            batcher.start()
            self.batchers[handle.name] = batcher

    def handle_for(self, name: str) -> LoadedModel:
        handle = self.models.get(name)
        if handle is None:
            if name in self.model_names:
                why = self.load_errors.get(name, "not loaded")
                raise HTTPProblem(503, f"model {name!r} is not being served: {why}")
            raise HTTPProblem(404, f"no model {name[:100]!r}; served: {sorted(self.models)}")
        return handle

    # --- logging -----------------------------------------------------------------------------

    def _log_batch(
        self,
        handle: LoadedModel,
        parts: list[tuple[Pending, list[Any], list[dict[str, float]] | None]],
    ) -> None:
        """One micro-batch into the durable log (before it is answered), then the metrics."""
        ts = now_iso()
        records = []
        for it, labels, probs in parts:
            records += inference_records(
                handle, it.request_id, it.client_id, it.rows, labels, probs, ts
            )
        if self.options.log_enabled:
            self.inference_log.append(
                handle.name, handle.version, inference_schema(handle), records
            )
        m = self.metrics
        m.rows.labels(handle.name).inc(len(records))
        if handle.classes is None:
            values = m.values.labels(handle.name)
            for rec in records:
                values.observe(rec["_prediction"])
        else:
            for rec in records:
                m.predictions.labels(
                    handle.name, m.label(handle.name, str(rec["_prediction"]))
                ).inc()

    def log_feedback(self, handle: LoadedModel, items: list[tuple[str, int, Any]]) -> int:
        """Spool labels; a (request id, row, label) already logged recently is not repeated."""
        ts = now_iso()
        fresh, seen = [], set()
        for rid, row, label in items:
            key = (rid, row)
            if self.recent_labels.get(key, _NONE) == label or (key, label) in seen:
                continue
            seen.add((key, label))
            fresh.append({"_request_id": rid, "_row": row, "_label": label, "_ts": ts})
        self.feedback_log.append(handle.name, handle.version, feedback_schema(handle), fresh)
        for rec in fresh:  # remembered once spooled, so a retry after a 503 is logged
            key = (rec["_request_id"], rec["_row"])
            self.recent_labels[key] = rec["_label"]
            self.recent_labels.move_to_end(key)
        while len(self.recent_labels) > 500_000:
            self.recent_labels.popitem(last=False)
        return len(fresh)
