"""Prometheus metrics of the serving API, with bounded label sets.

Every label value comes from a closed set: a model label is a served model's name or `other`
(made-up names in paths share it, on the 401 path too), a feature label is one of the model's
signature columns or `other`, a decision one of the monitor's decisions.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
OTHER = "other"
DECISIONS = ("ok", "warn", "retrain", "insufficient_data", "no_champion", "schema_changed")
MAX_CLASS_LABELS = 50


SCORING_ENDPOINTS = ("predict", "invocations")
ROLES = ("champion", "challenger")
SHADOW_OUTCOMES = ("mirrored", "dropped", "agree", "disagree")
ERROR_REASONS = ("input", "request", "predict", "log_full")
# The monitor's decisions (steps/monitor/decision.py; tests/unit/test_infra.py keeps them equal).
MONITOR_DECISIONS = ("ok", "warn", "retrain", "insufficient_data", "schema_changed", "no_champion")


class Metrics:
    def __init__(self, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        self.features: dict[str, frozenset[str]] = {}
        self.classes: dict[str, frozenset[str]] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "retrainer_requests", "Requests answered", ["model", "endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "retrainer_request_errors",
            "Requests answered with an error",
            ["model", "endpoint", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "retrainer_request_latency_seconds",
            "Request latency",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter("retrainer_rows_predicted", "Rows predicted", ["model"], registry=r)
        self.refused = Counter(
            "retrainer_rows_refused",
            "Rows refused at the edge (4xx: not what the signature's types can hold)",
            ["model"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "retrainer_batch_rows",
            "Rows per predict call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=r,
        )
        self.version = Gauge(
            "retrainer_model_version", "Model version being served", ["model"], registry=r
        )
        self.predictions = Counter(
            "retrainer_predictions",
            "Predictions by class (classification)",
            ["model", "label"],
            registry=r,
        )
        self.values = Histogram(
            "retrainer_prediction_value", "Predicted values (regression)", ["model"], registry=r
        )
        self.reloads = Counter(
            "retrainer_reloads", "Model reloads", ["model", "outcome"], registry=r
        )
        self.log_rows = Counter(
            "retrainer_log_rows",
            "Logged rows by outcome (written to the destination, quarantined)",
            ["log", "outcome"],
            registry=r,
        )
        self.spool_bytes = Gauge(
            "retrainer_log_spool_bytes", "Bytes waiting in the local spool", ["log"], registry=r
        )
        self.spool_limit = Gauge(
            "retrainer_log_spool_limit_bytes",
            "The spool's bound (requests get 503 there)",
            ["log"],
            registry=r,
        )
        self.spool_state = Gauge(
            "retrainer_log_spool_state",
            "Spool state: 0 ok, 1 near the bound, 2 at the bound",
            ["log"],
            registry=r,
        )
        # Two versions of one model (shadow, canary): the role is the label, the version sits in
        # one info gauge, so the label sets stay bounded whatever versions come and go.
        self.role_version = Gauge(
            "retrainer_model_role_version",
            "Version number loaded in each role",
            ["model", "role"],
            registry=r,
        )
        self.role_requests = Counter(
            "retrainer_role_requests",
            "Requests answered by each role",
            ["model", "role"],
            registry=r,
        )
        self.role_rows = Counter(
            "retrainer_role_rows",
            "Rows predicted by each role (the challenger's mirrored rows included)",
            ["model", "role"],
            registry=r,
        )
        self.role_errors = Counter(
            "retrainer_role_errors",
            "Rows a role failed to score or log (never shown to clients for the challenger)",
            ["model", "role"],
            registry=r,
        )
        self.predict_seconds = Histogram(
            "retrainer_predict_seconds",
            "Wall time of one predict call",
            ["model", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_cpu = Counter(
            "retrainer_predict_cpu_seconds",
            "CPU seconds spent in predict calls (thread CPU time of the calling thread)",
            ["model", "role"],
            registry=r,
        )
        self.loaded_bytes = Gauge(
            "retrainer_model_loaded_bytes",
            "Size of the loaded estimator (its pickle, in bytes)",
            ["model", "role"],
            registry=r,
        )
        self.shadow_rows = Counter(
            "retrainer_shadow_rows",
            "Rows mirrored to the shadow challenger, by outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.canary_fallbacks = Counter(
            "retrainer_canary_fallbacks",
            "Canary requests the challenger failed, answered by the champion",
            ["model"],
            registry=r,
        )
        # Reported by the monitor DAG after each check (POST /models/<name>/drift), so one
        # scrape target carries traffic, drift and retrain events for dashboards and alerts.
        self.psi = Gauge(
            "retrainer_psi", "PSI per feature at the last check", ["model", "feature"], registry=r
        )
        self.checks = Counter(
            "retrainer_monitor_checks",
            "Monitor checks by decision",
            ["model", "decision"],
            registry=r,
        )
        self.retrains = Counter(
            "retrainer_retrains_triggered",
            "Retrains triggered by the monitor",
            ["model"],
            registry=r,
        )
        # From start-up, not from a model's first installed version: the first drift retrain
        # can be reported within one scrape interval of v1's install, and a series first seen at
        # 1 never shows in increase() (the compose stack's Prometheus test saw exactly that).
        for name in self.models:
            self.retrains.labels(name)

    def model(self, name: str) -> str:
        """The label of a model name: itself if served, else the shared `other`."""
        return name if name in self.models else OTHER

    def known(self, name: str, features: Iterable[str], classes: Iterable[str] | None) -> None:
        """A version was installed: its columns and classes become valid label values, and its
        counters exist from now on."""
        self.features[name] = frozenset(features)
        self.classes[name] = frozenset(list(classes or [])[:MAX_CLASS_LABELS])
        self.start_at_zero(name)

    def start_at_zero(self, model: str) -> None:
        """Create a served model's counters for every known label value at 0: a series that
        appears only at its first increment is invisible to rate()/increase() for that step."""
        for endpoint in SCORING_ENDPOINTS:
            self.requests.labels(model, endpoint, "200")
            for reason in ERROR_REASONS:
                self.errors.labels(model, endpoint, reason)
        self.rows.labels(model)
        for outcome in ("ok", "failed"):
            self.reloads.labels(model, outcome)
        for decision in MONITOR_DECISIONS:
            self.checks.labels(model, decision)
        self.retrains.labels(model)
        for role in ROLES:
            for counter in (self.role_requests, self.role_rows, self.role_errors, self.predict_cpu):
                counter.labels(model, role)
        for outcome in SHADOW_OUTCOMES:
            self.shadow_rows.labels(model, outcome)
        self.canary_fallbacks.labels(model)

    def feature(self, model: str, feature: str) -> str:
        return feature if feature in self.features.get(model, ()) else OTHER

    def label(self, model: str, label: str) -> str:
        return label if label in self.classes.get(model, ()) else OTHER
