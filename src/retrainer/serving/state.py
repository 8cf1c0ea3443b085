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
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from retrainer.config.secrets import api_token, serving_admin_token
from retrainer.config.settings import Settings
from retrainer.serving.batcher import AfterPredict, Batcher, ObservePredict, Pending
from retrainer.serving.durable_log import DurableLog, now_iso
from retrainer.serving.http import HTTPProblem, RequestIds
from retrainer.serving.inference_log import (
    feedback_schema,
    inference_records,
    inference_schema,
    shadow_records,
    shadow_schema,
)
from retrainer.serving.metrics import Metrics
from retrainer.serving.model import LoadedModel, load_version
from retrainer.serving.options import ServingOptions
from retrainer.serving.rollout import (
    CHALLENGER,
    CHAMPION,
    SHADOW_BATCH_ROWS,
    SHADOW_GATHER_SECONDS,
    SHADOW_SLICE,
    Challenger,
    Mirror,
    Rollout,
    Step,
    compare,
)
from retrainer.serving.shadow import PAIRED_ROWS, Answer, Scored

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
        self.shadow_log = self._log(settings.shadow_log_root, "shadow")
        self.rollouts: dict[str, Rollout] = {}

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
    def logs(self) -> tuple[DurableLog, DurableLog, DurableLog]:
        return self.inference_log, self.feedback_log, self.shadow_log

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
        if wanted.isdigit() and int(wanted) > 2**63 - 1:  # the registry's column: a 500 there
            raise HTTPProblem(
                404, f"{name} has no version {wanted[:30]}...: versions are 64-bit integers"
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
        for loaded in self._loaded(name):  # a promotion reuses the challenger's handle
            if loaded.version == resolved:
                return loaded
        return load_version(name, resolved, self.settings.tracking_uri)

    def _loaded(self, name: str) -> list[LoadedModel]:
        rollout = self.rollouts.get(name)
        return [rollout.challenger.handle] if rollout is not None else []

    def install(self, handle: LoadedModel) -> None:
        self.models[handle.name] = handle  # one reference swap: in-flight requests keep theirs
        self.load_errors.pop(handle.name, None)
        classes = [str(c) for c in handle.classes] if handle.classes is not None else None
        self.metrics.known(handle.name, handle.column_names, classes)
        with suppress(ValueError):
            self.metrics.version.labels(handle.name).set(float(handle.version))
        self._show_role(handle, CHAMPION)
        if handle.name not in self.batchers:
            self.batchers[handle.name] = self._batcher(handle.name, CHAMPION)

    def _show_role(self, handle: LoadedModel, role: str) -> None:
        m = self.metrics
        with suppress(ValueError):
            m.role_version.labels(handle.name, role).set(float(handle.version))
        m.loaded_bytes.labels(handle.name, role).set(handle.loaded_bytes)

    def _observer(self, name: str, role: str, step: Step | None = None) -> ObservePredict:
        """Predict calls into the metrics and (the current or the given) step's timings."""
        seconds = self.metrics.predict_seconds.labels(name, role)
        cpu = self.metrics.predict_cpu.labels(name, role)

        def observe(handle: LoadedModel, rows: int, wall: float, cpu_s: float, ok: bool) -> None:
            seconds.observe(wall)
            cpu.inc(cpu_s)
            self._step_time(name, role, wall, step)

        return observe

    def _batcher(self, name: str, role: str, executor: Executor | None = None) -> Batcher:
        """The champion's batcher predicts small batches inline; a challenger's always in its
        own thread (`executor`), so a slow challenger never stalls the event loop."""

        def log_batch(
            handle: LoadedModel,
            parts: list[tuple[Pending, list[Any], list[dict[str, float]] | None]],
        ) -> None:
            self._log_batch(handle, parts, role)

        batcher = Batcher(
            name,
            log_batch,
            self.metrics.batch_rows.labels(name).observe,
            log_in_thread=self.options.fsync,
            observe_predict=self._observer(name, role),
            executor=executor,
            inline_rows=64 if executor is None else 0,
            after_predict=self._canary_pair(name) if role == CHALLENGER else None,
        )
        batcher.start()
        return batcher

    # --- rollout (shadow, canary) ------------------------------------------------------------

    def _canary_pair(self, name: str) -> AfterPredict:
        """After one canary batch in PAIRED_EVERY (at most PAIRED_ROWS rows): both versions timed
        on its rows in the shadow's process, as in shadow. The versions' own live calls are not
        comparable: the challenger's run in a thread (a slow one must never stall the event
        loop), the champion's on the loop, and a thread's calls include waits for the GIL."""

        def pair(handle: LoadedModel, rows: list[dict[str, Any]]) -> None:
            rollout = self.rollouts.get(name)
            if rollout is None or rollout.step.mode != "canary" or len(rows) > PAIRED_ROWS:
                return
            step, champion = rollout.step, self.models.get(name)
            if rollout.challenger.handle is not handle or champion is None or champion is handle:
                return
            with step.lock:
                due = step.paired.due()
            if not due:
                return
            # against the champion serving now (a reload changes it), in a live process (a dead
            # one is replaced): this runs in the challenger's thread, off the event loop
            try:
                shadow = rollout.challenger.shadow_process(champion)
            except Exception:  # taken out of traffic meanwhile, or no process can start: no pair
                return

            def record(done: Future[tuple[float, float]]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return  # the champion refused the rows, or the process is gone: no pair
                with step.lock:
                    step.paired.add(*done.result())

            with suppress(Exception):  # a broken pool: no pair (serving goes on)
                shadow.pair(rows).add_done_callback(record)

        return pair

    def _step_time(self, name: str, role: str, wall: float, step: Step | None = None) -> None:
        step = step or self._step(name)
        if step is not None:
            with step.lock:
                step.role(role).times_ms.append(wall * 1000)

    def _step(self, name: str) -> Step | None:
        rollout = self.rollouts.get(name)
        return rollout.step if rollout is not None else None

    def start_rollout(
        self, handle: LoadedModel, mode: str, fraction: float, key: str | None
    ) -> Rollout:
        """A new step (stats from zero); the challenger's runtime is kept if it is the same."""
        name = handle.name
        old = self.rollouts.get(name)
        if old is not None and old.challenger.handle is handle:
            challenger = old.challenger
        else:
            executor = ThreadPoolExecutor(1, thread_name_prefix=f"challenger-{name}")
            challenger = Challenger(handle, self._batcher(name, CHALLENGER, executor), executor)
            challenger.worker = asyncio.get_running_loop().create_task(
                self._shadow_worker(challenger)
            )
        rollout = Rollout(challenger, Step(mode, fraction, key))
        self.rollouts[name] = rollout
        if old is not None and old.challenger is not challenger:
            old.challenger.close()
        self._show_role(handle, CHALLENGER)
        return rollout

    def end_rollout(self, name: str) -> Rollout | None:
        """The challenger out of traffic at once; the ended rollout (its final stats)."""
        rollout = self.rollouts.pop(name, None)
        if rollout is not None:
            rollout.challenger.close()
            for gauge in (self.metrics.role_version, self.metrics.loaded_bytes):
                with suppress(KeyError):
                    gauge.remove(name, CHALLENGER)
        return rollout

    def canary(self, name: str, rows: list[dict[str, Any]], request_id: str) -> Rollout | None:
        """The rollout that answers this request with its challenger, if it is routed there."""
        rollout = self.rollouts.get(name)
        if rollout is None or rollout.step.mode != "canary":
            return None
        return rollout if rollout.step.routes(rows, request_id) else None

    def challenger_failed(self, rollout: Rollout, exc: BaseException) -> None:
        """A canary request the challenger could not answer: the champion answers it."""
        name = rollout.challenger.handle.name
        with rollout.step.lock:
            rollout.step.challenger.errors += 1
            rollout.step.challenger.fallbacks += 1
        self.metrics.role_errors.labels(name, CHALLENGER).inc()
        self.metrics.canary_fallbacks.labels(name).inc()
        log.warning(
            "canary: challenger %s v%s failed a request (%s: %s); answered by the champion",
            name,
            rollout.challenger.handle.version,
            type(exc).__name__,
            str(exc)[:300],
        )

    def champion_failed(self, name: str) -> None:
        step = self._step(name)
        if step is not None:
            with step.lock:
                step.champion.errors += 1
        self.metrics.role_errors.labels(name, CHAMPION).inc()

    def mirror(
        self,
        champion: LoadedModel,
        request_id: str,
        rows: list[dict[str, Any]],
        labels: list[Any],
        probs: list[dict[str, float]] | None,
    ) -> None:
        """After the champion answered: queue the request for the shadow, or drop it if the
        queue is full (never wait)."""
        rollout = self.rollouts.get(champion.name)
        if rollout is None or rollout.step.mode != "shadow":
            return
        step, challenger = rollout.step, rollout.challenger
        if not step.routes(rows, request_id):
            return
        m = self.metrics
        if challenger.queued_rows + len(rows) > self.options.shadow_queue_rows:
            with step.lock:
                step.mirrored.dropped += len(rows)
            m.shadow_rows.labels(champion.name, "dropped").inc(len(rows))
            return
        challenger.queued_rows += len(rows)
        challenger.queue.put_nowait(Mirror(request_id, champion, rows, labels, probs, step))

    async def _shadow_worker(self, challenger: Challenger) -> None:
        while True:
            items = [await challenger.queue.get()]
            n = len(items[0].rows)
            if challenger.queued_rows < SHADOW_BATCH_ROWS:
                # A predict call costs about the same for 1 row as for 100 (a model's fixed
                # cost per call, e.g. a Python loop over its trees): let mirrors gather.
                await asyncio.sleep(SHADOW_GATHER_SECONDS)
            while n < SHADOW_BATCH_ROWS and not challenger.queue.empty():
                items.append(challenger.queue.get_nowait())
                n += len(items[-1].rows)
            try:
                await self._score_mirrors(challenger, items)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the worker die: the next items are scored
                log.exception("shadow: scoring mirrored rows of %s failed", challenger.handle.name)
            finally:
                challenger.queued_rows -= n

    async def _score_mirrors(self, challenger: Challenger, items: list[Mirror]) -> None:
        """Score in the shadow's process (checks, one predict call, each request alone if it
        fails), then compare with the champion and log, in the challenger's thread; a request
        the challenger fails is counted, not retried."""
        champion, step = items[0].champion, items[0].step
        # a thread only to start one: a hop to the pool and back for every batch cost the loop
        shadow = challenger.running_shadow(champion)
        if shadow is None:
            shadow = await asyncio.to_thread(challenger.shadow_process, champion)
        with step.lock:
            pair = step.paired.due()
        try:
            scored = await asyncio.wrap_future(
                shadow.score([it.rows for it in items], self.max_rows, pair)
            )
        except (BrokenProcessPool, RuntimeError) as exc:  # died, or shut by another thread
            log.error(
                "shadow: the process scoring %s v%s %s; %d mirrored requests counted as "
                "failed, a new one starts with the next",
                challenger.handle.name,
                challenger.handle.version,
                "died" if isinstance(exc, BrokenProcessPool) else f"was shut ({exc})",
                len(items),
            )
            challenger.forget_shadow(shadow)
            scored = Scored([None] * len(items))
        await self._record_mirrors(challenger, items, scored)

    async def _record_mirrors(
        self, challenger: Challenger, items: list[Mirror], scored: Scored
    ) -> None:
        """Compare, log and count on the event loop, a slice of `SHADOW_SLICE` mirrors at a
        time with a turn of the loop between slices: the same work in a thread would hold the
        GIL for milliseconds at once (Python hands it back every 5 ms) and stall every request
        that arrived meanwhile, which is what a shadow's cost on the champion's p99 was."""
        handle, step = challenger.handle, items[0].step
        observe = self._observer(handle.name, CHALLENGER, step)
        for call in scored.calls:
            observe(handle, call.rows, call.wall, call.cpu, call.ok)
        if scored.paired is not None:
            with step.lock:
                step.paired.add(*scored.paired)
        answered = []
        for it, answer in zip(items, scored.answers, strict=True):
            if answer is None:
                self._mirror_failed(it)
            else:
                answered.append((it, answer))
        for start in range(0, len(answered), SHADOW_SLICE):
            part = answered[start : start + SHADOW_SLICE]
            if self.options.fsync:  # an fsync'd append blocks for milliseconds: not on the loop
                await asyncio.to_thread(self._log_mirrors, handle, part)
            else:
                await asyncio.sleep(0)
                self._log_mirrors(handle, part)

    def _log_mirrors(self, handle: LoadedModel, scored: list[tuple[Mirror, Answer]]) -> None:
        """One shadow-log append for the batch (per champion version in it), then the step's
        statistics; if the append fails, the batch's mirrors are counted as failed."""
        ts = now_iso()
        by_champion: dict[tuple[int, int], list[tuple[Mirror, Answer]]] = {}
        for pair in scored:
            by_champion.setdefault((id(pair[0].champion), id(pair[0].step)), []).append(pair)
        for pairs in by_champion.values():
            champion = pairs[0][0].champion
            try:
                self.shadow_log.append(
                    handle.name,
                    handle.version,
                    shadow_schema(champion, handle),
                    [
                        rec
                        for it, (labels, probs) in pairs
                        for rec in shadow_records(
                            it.request_id,
                            (champion.version, it.labels, it.probs),
                            (handle.version, labels, probs),
                            ts,
                        )
                    ],
                )
            except Exception:
                for it, _ in pairs:
                    self._mirror_failed(it)
                continue
            self._count_mirrors(handle, pairs)

    def _count_mirrors(self, handle: LoadedModel, pairs: list[tuple[Mirror, Answer]]) -> None:
        """The step's agreement and the metrics for logged mirrors (one increment each)."""
        m = self.metrics
        classification = handle.classes is not None
        step = pairs[0][0].step
        rows = sum(len(labels) for _, (labels, _) in pairs)
        with step.lock:
            before = step.mirrored.agree
            step.challenger.requests += len(pairs)
            step.challenger.rows += rows
            for it, (labels, _) in pairs:
                compare(it.labels, labels, classification, step.mirrored)
            agreed = step.mirrored.agree - before
        m.role_requests.labels(handle.name, CHALLENGER).inc(len(pairs))
        m.role_rows.labels(handle.name, CHALLENGER).inc(rows)
        m.shadow_rows.labels(handle.name, "mirrored").inc(rows)
        if classification:
            m.shadow_rows.labels(handle.name, "agree").inc(agreed)
            m.shadow_rows.labels(handle.name, "disagree").inc(rows - agreed)

    def _mirror_failed(self, it: Mirror) -> None:
        with it.step.lock:
            it.step.challenger.errors += 1
        self.metrics.role_errors.labels(it.champion.name, CHALLENGER).inc()

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
        role: str = CHAMPION,
    ) -> None:
        """One micro-batch into the durable log (before it is answered), then the metrics."""
        ts = now_iso()
        records = []
        for it, labels, probs in parts:
            records += inference_records(
                handle, it.request_id, it.client_id, it.rows, labels, probs, ts, role
            )
        if self.options.log_enabled:
            self.inference_log.append(
                handle.name, handle.version, inference_schema(handle), records
            )
        m = self.metrics
        m.rows.labels(handle.name).inc(len(records))
        m.role_requests.labels(handle.name, role).inc(len(parts))
        m.role_rows.labels(handle.name, role).inc(len(records))
        step = self._step(handle.name)
        if step is not None:
            with step.lock:
                stats = step.role(role)
                stats.requests += len(parts)
                stats.rows += len(records)
        if handle.classes is None:
            values = m.values.labels(handle.name)
            for rec in records:
                values.observe(rec["_prediction"])
        else:
            for rec in records:
                m.predictions.labels(
                    handle.name, m.label(handle.name, str(rec["_prediction"]))
                ).inc()

    def log_feedback(
        self, handle: LoadedModel, items: list[tuple[str, int, Any, float | None]]
    ) -> int:
        """Spool labels, each with when its request was answered (`_answered`, from the request
        id; None for an id from before): the monitor finds the row of a label that arrives days
        later by it. A label equal to the row's latest one (logged recently, or earlier in this
        request) is not repeated. A correction is always logged, even back to an earlier label
        ([bad, good, bad] logs all three): readers keep a row's last label."""
        ts = now_iso()
        fresh: list[dict[str, Any]] = []
        latest: dict[tuple[str, int], Any] = {}
        for rid, row, label, answered in items:
            key = (rid, row)
            if latest.get(key, self.recent_labels.get(key, _NONE)) == label:
                continue
            latest[key] = label
            when = None if answered is None else datetime.fromtimestamp(answered, UTC).isoformat()
            fresh.append(
                {"_request_id": rid, "_row": row, "_label": label, "_ts": ts, "_answered": when}
            )
        self.feedback_log.append(handle.name, handle.version, feedback_schema(handle), fresh)
        for rec in fresh:  # remembered once spooled, so a retry after a 503 is logged
            key = (rec["_request_id"], rec["_row"])
            self.recent_labels[key] = rec["_label"]
            self.recent_labels.move_to_end(key)
        while len(self.recent_labels) > 500_000:
            self.recent_labels.popitem(last=False)
        return len(fresh)
