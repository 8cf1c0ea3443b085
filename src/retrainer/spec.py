"""The model spec: the user's contract, one YAML file per model (see DESIGN.md).

Loading is strict: unknown keys, wrong types and inconsistent choices fail with the file, the key,
what was expected and what was found. This module imports no heavy library so that DAG files can
read specs at parse time.
"""

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrainer.constants import (
    DEFAULT_ESTIMATOR_MODULES,
    ESTIMATOR_MODULES_ENV,
    SPEC_MAX_ALIASES,
    SPEC_MAX_BYTES,
    SPEC_MAX_DEPTH,
    SPEC_MAX_NODES,
)
from retrainer.errors import SpecError

CLASSIFICATION_METRICS = ("roc_auc", "f1", "accuracy", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
TEAM_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"  # also a valid part of a DAG id
MODULE_PATTERN = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_YAML_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster at parse time


class _YAML_LOADER(_YAML_BASE):  # type: ignore[misc,valid-type]
    """The safe loader, refusing a key given twice in one mapping: YAML would keep the last one
    silently, so a second `gate:` block would drop the first one's thresholds."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class says what is wrong
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {short_repr(key)} is given twice in this mapping (first on line "
                        f"{first + 1}); keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_DURATION = timedelta(weeks=520)  # ten years: longer is a typo, and overflows a timedelta


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '12h', '1d', '2w' or a number of seconds, at most ten years."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"expected a duration like 30m, 12h, 1d or 2w; found {short_repr(text)}")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(
            f"expected a duration of at most 520w (ten years); found {short_repr(text)}"
        )
    return timedelta(seconds=seconds)


# A bound or an edge: a finite number (NaN compares false with everything and would turn a check
# off; an infinite one is "no bound", which is written by leaving the key out)
Finite = Annotated[float, Field(allow_inf_nan=False)]
# numpy's and sklearn's seeds: 0 to 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
AIRFLOW_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
)


def schedule_problem(value: str) -> str:
    """Why Airflow would refuse this schedule ('' if it takes it): a preset or a five-field cron
    expression. Checked at spec load, because Airflow refuses it only when it builds the DAG,
    and the model's monitor would vanish from the UI with the error in the DAG processor's log."""
    if value in AIRFLOW_PRESETS:
        return ""
    from croniter import croniter  # small; Airflow's own dependency

    fields = value.split()
    try:
        croniter(value)
    except Exception as exc:  # croniter's errors share no useful base beyond ValueError/KeyError
        return f"not a cron expression ({exc})"
    if len(fields) != 5:
        return f"expected 5 cron fields (minute hour day month weekday); found {len(fields)}"
    return ""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> "Features":
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {both}")
        return self


class DataSpec(_Strict):
    train: str = Field(
        description="file or folder of csv/parquet; local path or s3://bucket/prefix"
    )
    target: str
    positive_class: str | int | bool | None = None
    features: Features | None = None
    ignore: list[str] = Field(default_factory=list)
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    random_state: Seed = 42


class ColumnCheck(_Strict):
    min: Finite | None = None
    max: Finite | None = None
    allowed: list[str | int | float | bool] | None = None
    max_null_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    required: bool = True

    @model_validator(mode="after")
    def _range(self) -> "ColumnCheck":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ValidationSpec(_Strict):
    min_rows: int = Field(default=100, ge=1)
    max_null_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    columns: dict[str, ColumnCheck] = Field(default_factory=dict)


class ModelConfig(_Strict):
    estimator: str = Field(description="dotted path of an sklearn-compatible estimator class")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", value):
            raise ValueError(
                f"expected a dotted class path like sklearn.linear_model.Ridge; found {short_repr(value)}"
            )
        return value


class Bound(_Strict):
    min: Finite | None = None
    max: Finite | None = None

    @model_validator(mode="after")
    def _range(self) -> "Bound":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max}): nothing passes")
        return self


DEFAULT_NI_MARGIN = 0.01  # non-inferiority: not worse than the champion by a point or more


MAX_SLICE_BINS = 100


class SliceSpec(_Strict):
    column: str
    bins: Annotated[int, Field(ge=2, le=MAX_SLICE_BINS)] | list[Finite] | None = Field(
        default=None, description="numeric columns: quantile bins (int, 2-100) or inner edges"
    )

    @field_validator("bins", mode="before")
    @classmethod
    def _one_message(cls, value: Any) -> Any:
        """One message for the usual mistakes, not one per branch of the union."""
        import math

        what = (
            f"expected a number of quantile bins from 2 to {MAX_SLICE_BINS} (e.g. 4) or a list "
            "of finite inner edges (e.g. [30, 50])"
        )
        if isinstance(value, int) and not isinstance(value, bool):
            if not 2 <= value <= MAX_SLICE_BINS:
                raise ValueError(f"{what}; found {value}")
        elif isinstance(value, list):
            if any(isinstance(v, float) and not math.isfinite(v) for v in value):
                raise ValueError(f"{what}; found {short_repr(value)}")
        elif value is not None:
            raise ValueError(f"{what}; found {short_repr(value)}")
        return value

    @field_validator("bins")
    @classmethod
    def _edges(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value or len(value) >= MAX_SLICE_BINS:
                raise ValueError(
                    f"expected 1 to {MAX_SLICE_BINS - 1} inner edges (e.g. [30, 50]) or a number "
                    f"of quantile bins (e.g. 4); found {len(value)} edges"
                )
            if any(b <= a for a, b in zip(value, value[1:], strict=False)):
                raise ValueError(f"expected increasing edges; found {short_repr(value)}")
        return value


class GateSpec(_Strict):
    """Thresholds, then the candidate against the champion on the same test rows.

    ``comparison`` (default ``non_inferiority``): ``superiority`` promotes when the one-sided
    lower confidence bound of the improvement is above ``margin``; ``non_inferiority`` when it is
    above ``-margin`` (default margin 0.01 in the metric's units); ``point`` is the rule before
    paired statistics: improvement >= ``min_improvement`` on the point estimate. A spec that sets
    ``min_improvement`` > 0 and no ``comparison`` means superiority with that margin.
    """

    primary_metric: str
    thresholds: dict[str, Bound] = Field(default_factory=dict)
    min_improvement: float = Field(default=0.0, ge=0.0)
    comparison: Literal["superiority", "non_inferiority", "point"] | None = None
    margin: float | None = Field(default=None, ge=0.0)
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    resamples: int = Field(default=2000, ge=1000, le=100_000)
    slices: list[SliceSpec] = Field(default_factory=list)
    slice_min_rows: int = Field(default=100, ge=10)
    slice_margin: float = Field(default=0.02, ge=0.0)

    @model_validator(mode="after")
    def _one_rule(self) -> "GateSpec":
        if self.comparison in ("superiority", "non_inferiority") and self.min_improvement > 0:
            raise ValueError(
                f"min_improvement ({self.min_improvement}) and comparison {self.comparison} both "
                "given: with a comparison, write the margin as margin"
            )
        if self.comparison == "point" and self.margin is not None:
            raise ValueError(
                "comparison point uses min_improvement; margin is for the paired rules"
            )
        return self

    @property
    def rule(self) -> str:
        """The comparison in force (the documented mapping of min_improvement)."""
        if self.comparison is not None:
            return self.comparison
        return "superiority" if self.min_improvement > 0 else "non_inferiority"

    @property
    def effective_margin(self) -> float:
        if self.rule == "point":
            return self.min_improvement
        if self.margin is not None:
            return self.margin
        if self.comparison is None and self.min_improvement > 0:
            return self.min_improvement
        return DEFAULT_NI_MARGIN if self.rule == "non_inferiority" else 0.0

    @property
    def rule_margins(self) -> dict[str, float]:
        """Each paired rule with its margin: the one in force, and the other as it would stand
        (the spec's margin if it sets one, else that rule's default), so a decision record
        shows both outcomes."""
        explicit = self.margin if self.margin is not None else (self.min_improvement or None)
        if explicit is not None:
            return {"superiority": explicit, "non_inferiority": explicit}
        return {"superiority": 0.0, "non_inferiority": DEFAULT_NI_MARGIN}


class RetrainCap(_Strict):
    """At most `count` drift-triggered retrains within any `per` (a duration such as 7d)."""

    count: int = Field(ge=1)
    per: str

    @field_validator("per")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class MonitoringSpec(_Strict):
    schedule: str | None = "@daily"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        problem = value and schedule_problem(value)
        if problem:
            raise ValueError(
                f"{problem}; expected a preset ({', '.join(AIRFLOW_PRESETS)}), a cron expression "
                f"such as '0 6 * * *', or null for no schedule; found {short_repr(value)}"
            )
        return value

    psi_bins: int = Field(default=10, ge=2, le=100)
    psi_warn: float = Field(default=0.1, gt=0.0)
    psi_retrain: float = Field(default=0.25, gt=0.0)
    min_rows: int = Field(default=200, ge=1)
    max_rows: int = Field(
        default=200_000,
        ge=1,
        le=100_000_000,
        description="a window that logged more rows (a paused monitor, the first check of a "
        "busy model) is checked on a uniform random sample of this many, read one log file at "
        "a time, so the check's memory stays bounded; the decision records how many were logged",
    )
    cooldown: str = "1d"
    fdr: float = Field(
        default=0.0001,
        gt=0.0,
        lt=1.0,
        description="a feature drifts when its PSI passes psi_retrain AND its bucket counts "
        "differ significantly: Benjamini-Hochberg-adjusted p <= fdr across features",
    )
    exclude: list[str] = Field(
        default_factory=list, description="features reported but left out of the trigger"
    )
    consecutive: int = Field(
        default=1, ge=1, le=10, description="a feature must drift in this many windows in a row"
    )
    max_estimated_drop: float | None = Field(
        default=None,
        gt=0.0,
        description="a drift-only retrain also needs the champion's primary metric to have "
        "dropped by this much: estimated without labels (CBPE, binary classifiers), or measured "
        "on delayed labels when they arrived",
    )
    max_outside_support: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="the label-free estimate is trusted only while fewer than this share of the "
        "window's rows lie outside the reference rows' support (beyond what 99% of them score "
        "on a classifier telling window from reference); otherwise it does not hold a drift "
        "retrain back",
    )
    max_retrains: RetrainCap | None = None
    calibration: Literal["cross_fitted", "test_split"] = Field(
        default="cross_fitted",
        description="rows the label-free estimate's isotonic calibration is fitted on: the test "
        "split plus out-of-fold predictions on the training rows (5 folds of the same "
        "pipeline, 5 more fits at training time; each fold's scores taken as percentiles of "
        "its own model's scores on the test split), or the test split only",
    )

    @model_validator(mode="after")
    def _order(self) -> "MonitoringSpec":
        try:
            parse_duration(self.cooldown)
        except ValueError as exc:
            raise ValueError(f"cooldown: {exc}") from None
        if self.max_rows < self.min_rows:
            raise ValueError(
                f"max_rows ({self.max_rows}) must be at least min_rows ({self.min_rows}): a "
                "window is checked on at most max_rows rows and needs min_rows to decide"
            )
        if self.psi_warn > self.psi_retrain:
            raise ValueError(
                f"psi_warn ({self.psi_warn}) must not exceed psi_retrain ({self.psi_retrain})"
            )
        return self


class CardSpec(_Strict):
    """What a model card says that the data cannot: purpose, audience, known limits."""

    intended_use: str = ""
    users: list[str] = Field(default_factory=list)
    out_of_scope: list[str] = Field(default_factory=list)
    limitations: list[str] = Field(default_factory=list)
    ethical_considerations: list[str] = Field(default_factory=list)
    contact: str = ""
    license: str = ""  # an SPDX identifier, or "proprietary"
    time_column: str | None = None  # a column whose range the card reports as the data's period


class RolloutSLO(_Strict):
    """What the challenger must keep during canary, measured against the champion."""

    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_p99_ratio: float = Field(default=1.5, ge=1.0)
    max_metric_drop: float = Field(
        default=0.02,
        ge=0.0,
        description="with delayed labels on canary rows: the challenger's primary metric may be "
        "at most this much worse than the champion's on the rows each answered",
    )


RolloutStrategy = Literal["direct", "shadow", "canary", "shadow_canary"]


class RolloutSpec(_Strict):
    """How a new version reaches traffic (README: Safe rollout). ``direct`` is 100% at once."""

    strategy: RolloutStrategy = "direct"
    shadow_fraction: float = Field(default=0.1, gt=0.0, le=1.0)
    min_rows: int = Field(default=500, ge=1)
    max_duration: str = "6h"
    check_interval: str = "5m"
    min_agreement: float = Field(default=0.95, gt=0.0, le=1.0)
    max_relative_difference: float = Field(default=0.05, gt=0.0)
    canary_steps: list[float] = Field(default_factory=lambda: [0.05, 0.25, 1.0])
    bake_time: str = "30m"
    key: str | None = None
    slo: RolloutSLO = Field(default_factory=RolloutSLO)
    on_new_version: Literal["wait", "replace"] = "wait"

    @model_validator(mode="after")
    def _consistent(self) -> "RolloutSpec":
        for name in ("max_duration", "check_interval", "bake_time"):
            try:
                seconds = parse_duration(getattr(self, name)).total_seconds()
            except ValueError as exc:
                raise ValueError(f"deployment.rollout.{name}: {exc}") from None
            if seconds <= 0:
                raise ValueError(f"deployment.rollout.{name}: must be longer than 0 seconds")
        steps = self.canary_steps
        if not steps:
            raise ValueError(
                "deployment.rollout.canary_steps: expected at least one step, e.g. [0.05, 0.25, 1.0]"
            )
        bad = [f for f in steps if not 0 < f <= 1]
        if bad:
            raise ValueError(
                f"deployment.rollout.canary_steps: each step is a fraction in (0, 1]; found {bad}"
            )
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or steps[-1] != 1.0:
            raise ValueError(
                "deployment.rollout.canary_steps: expected increasing fractions ending at 1.0 "
                f"(e.g. [0.05, 0.25, 1.0]); found {steps}"
            )
        if self.check_seconds > self.max_duration_seconds:
            raise ValueError(
                f"deployment.rollout.check_interval ({self.check_interval}) is longer than "
                f"max_duration ({self.max_duration}); the shadow would be decided unchecked"
            )
        return self

    @property
    def shadow(self) -> bool:
        return self.strategy in ("shadow", "shadow_canary")

    @property
    def canary(self) -> bool:
        return self.strategy in ("canary", "shadow_canary")

    @property
    def check_seconds(self) -> float:
        return parse_duration(self.check_interval).total_seconds()

    @property
    def max_duration_seconds(self) -> float:
        return parse_duration(self.max_duration).total_seconds()

    @property
    def bake_seconds(self) -> float:
        return parse_duration(self.bake_time).total_seconds()


class DeploymentSpec(_Strict):
    approval: Literal["auto", "manual"] = "auto"
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)


AlertEvent = Literal[
    "monitor_warn",
    "monitor_retrain",
    "monitor_schema_changed",
    "gate_rejected",
    "deploy_rolled_back",
    "rollout_stopped",
    "task_failed",
]
ALERT_EVENTS: tuple[AlertEvent, ...] = get_args(AlertEvent)


class AlertRoute(_Strict):
    """Where alerts go: an Airflow connection id (never a URL or a token: specs hold no
    secrets), and which events it receives (default: all)."""

    conn_id: str
    events: list[AlertEvent] = Field(default_factory=lambda: list(ALERT_EVENTS))

    @field_validator("conn_id")
    @classmethod
    def _an_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(
                "expected an Airflow connection id (letters, digits, _ . -) that holds the "
                "destination; never a URL or a token (specs hold no secrets); found "
                f"{value[:12]!r}..."
            )
        return value


DAG_ACCESS: dict[str, dict[str, set[str]]] = {
    # What a role may do on the model's three DAGs (the FAB auth manager's permissions).
    "read": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
    "edit": {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create", "can_edit"}},
}


class AccessControl(_Strict):
    """Who sees and acts on the model's DAGs (and its row on the Models page).

    `team`: Airflow's multi-team mode (the simple auth manager of both profiles): the model's
    DAGs live in that team's DAG bundle, so only the team's users (and admins) see them.
    `roles`: the FAB auth manager: role name -> `read` or `edit`, set as the DAGs'
    `access_control`."""

    team: str | None = Field(default=None, pattern=TEAM_PATTERN)
    roles: dict[str, Literal["read", "edit"]] = Field(default_factory=dict)

    @field_validator("roles")
    @classmethod
    def _role_names(cls, value: dict[str, str]) -> dict[str, str]:
        for role in value:
            if not role.strip() or role != role.strip() or len(role) > 64:
                raise ValueError(
                    f"roles: {role!r} is not a role name (1-64 characters, no surrounding spaces)"
                )
        return value

    @model_validator(mode="after")
    def _something(self) -> "AccessControl":
        if self.team is None and not self.roles:
            raise ValueError(
                "access_control: give a `team` (multi-team mode) or `roles` (FAB auth manager), "
                "or leave access_control out for a model every user may see"
            )
        return self

    def dag_access_control(self) -> dict[str, dict[str, set[str]]] | None:
        """The DAGs' `access_control` (FAB roles), None without roles."""
        return {role: DAG_ACCESS[level] for role, level in self.roles.items()} or None


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    task: Literal["classification", "regression"]
    # The registered model's description in MLflow, whose PostgreSQL column holds 5,000
    # characters (a longer one is refused there)
    description: str = Field(default="", max_length=5000)
    owner: str = "retrainer"
    data: DataSpec
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    model: ModelConfig
    gate: GateSpec
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    card: CardSpec = Field(default_factory=CardSpec)
    alerts: list[AlertRoute] = Field(default_factory=list)
    access_control: AccessControl | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        for key, metric in [("gate.primary_metric", self.gate.primary_metric)] + [
            (f"gate.thresholds.{m}", m) for m in self.gate.thresholds
        ]:
            if metric not in allowed:
                raise ValueError(
                    f"{key}: {metric!r} is not a {self.task} metric; expected one of {list(allowed)}"
                )
        if self.task == "regression" and self.data.positive_class is not None:
            raise ValueError("data.positive_class only applies to classification")
        feats = self.data.features
        if feats is not None:
            listed = set(feats.numeric) | set(feats.categorical)
            if self.data.target in listed:
                raise ValueError(
                    f"data.features: the target {self.data.target!r} is listed as a feature"
                )
            clash = sorted(listed & set(self.data.ignore))
            if clash:
                raise ValueError(f"data.features: columns both used and ignored: {clash}")
            split = self.deployment.rollout.key
            if split is not None and split not in listed:
                raise ValueError(
                    f"deployment.rollout.key: {split!r} is not a listed feature (the canary split "
                    f"reads it from each request); expected one of {sorted(listed)} or null"
                )
        return self

    # Names derived from the model name live here, in one place.
    @property
    def experiment_name(self) -> str:
        return f"retrainer/{self.name}"

    @property
    def retrain_dag_id(self) -> str:
        return f"{self.name}_retrain"

    @property
    def deploy_dag_id(self) -> str:
        return f"{self.name}_deploy"

    @property
    def monitor_dag_id(self) -> str:
        return f"{self.name}_monitor"

    @property
    def higher_is_better(self) -> bool:
        return self.gate.primary_metric not in LOWER_IS_BETTER

    def alert_destinations(self, event: str) -> list[str]:
        """The connection ids that receive `event`."""
        return [route.conn_id for route in self.alerts if event in route.events]

    @property
    def team(self) -> str | None:
        return self.access_control.team if self.access_control else None

    def metrics(self) -> tuple[str, ...]:
        return CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS


def _location(loc: tuple[int | str, ...]) -> str:
    """gate.thresholds.roc_auc; a key that is not a plain word (a newline, a quote) as its repr."""
    return (
        ".".join(
            str(p) if isinstance(p, int) or re.fullmatch(r"[\w-]{1,80}", p) else short_repr(p, 60)
            for p in loc
        )
        or "(top level)"
    )


def _describe(err: dict[str, Any]) -> str:
    key = _location(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    found = err.get("input")
    msg = err.get("msg", "")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "extra_forbidden":
        return (
            f"{key}: unknown key (found {short_repr(found)}); check the spelling against the "
            "README's 'A model spec' section"
        )
    shown = short_repr(found)
    if msg.startswith("Value error, "):  # our own validators say expected/found themselves
        return f"{key}: {msg[len('Value error, ') :]}"
    return f"{key}: expected {msg[0].lower() + msg[1:] if msg else kind}; found {shown}"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut at `limit` characters, built piece by piece: a value that shares sub-values
    (YAML aliases) is never expanded beyond what is shown."""
    out: list[str] = []
    budget = limit + 1

    def emit(text: str) -> None:
        nonlocal budget
        out.append(text[: max(budget, 0)])
        budget -= len(text)

    def walk(v: Any) -> None:
        if budget <= 0:
            return
        if isinstance(v, dict):
            emit("{")
            for i, (k, x) in enumerate(v.items()):
                if budget <= 0:
                    return
                emit(", " if i else "")
                walk(k)
                emit(": ")
                walk(x)
            emit("}")
        elif isinstance(v, list | tuple):
            emit("[")
            for i, x in enumerate(v):
                if budget <= 0:
                    return
                emit(", " if i else "")
                walk(x)
            emit("]")
        elif isinstance(v, str) and len(v) > limit:
            emit(repr(v[: limit + 1]))
        else:
            emit(repr(v))

    walk(value)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def allowed_estimator_modules(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The packages a spec's model.estimator may come from: scikit-learn, plus the modules
    listed in RETRAINER_ESTIMATOR_MODULES (comma-separated, e.g. "xgboost,lightgbm")."""
    env = os.environ if environ is None else environ
    extra = [m.strip() for m in env.get(ESTIMATOR_MODULES_ENV, "").split(",") if m.strip()]
    bad = [m for m in extra if not re.fullmatch(MODULE_PATTERN, m)]
    if bad:
        raise SpecError(
            f"{ESTIMATOR_MODULES_ENV}: expected comma-separated module names like "
            f"'xgboost,lightgbm'; found {bad}"
        )
    return tuple(dict.fromkeys([*DEFAULT_ESTIMATOR_MODULES, *extra]))


def in_allowed_module(dotted: str, allowed: Sequence[str]) -> bool:
    """`dotted` names something inside one of the allowed packages (a string check only)."""
    return any(dotted == m or dotted.startswith(m + ".") for m in allowed)


def estimator_path_problem(dotted: str, allowed: Sequence[str]) -> str:
    """Why a spec may not name this estimator ('' if it may). No import: DAG parsing runs this."""
    module, _, name = dotted.rpartition(".")
    if not in_allowed_module(module, allowed):
        return (
            f"model.estimator: {dotted!r} is not from an allowed module; expected a scikit-learn "
            f"compatible estimator class from {list(allowed)} (a platform operator may allow more "
            f"packages with {ESTIMATOR_MODULES_ENV}, e.g. xgboost,lightgbm)"
        )
    if name.startswith("_") or any(p.startswith("__") for p in module.split(".")):
        return f"model.estimator: {dotted!r} is private; name a public estimator class"
    return ""


def parse_spec(
    raw: Any, source: str = "<spec>", estimator_modules: Sequence[str] | None = None
) -> ModelSpec:
    """Validate a parsed YAML document. Raises SpecError naming the source and every bad key.

    `model.estimator` must lie in an allowed module (default: `allowed_estimator_modules()`);
    this is a string check, the class is imported only where it runs (training.py).
    """
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: expected a mapping of keys (name, task, data, ...); found {type(raw).__name__}"
        )
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise SpecError(f"{source}: invalid model spec\n  - " + "\n  - ".join(lines)) from None
    allowed = allowed_estimator_modules() if estimator_modules is None else estimator_modules
    problem = estimator_path_problem(spec.model.estimator, allowed)
    if problem:
        raise SpecError(f"{source}: invalid model spec\n  - {problem}")
    return spec


def _check_yaml_shape(text: str, source: str) -> None:
    """Refuse YAML that is not a small hand-written document before building any object.

    Walks libyaml's event stream once, counting alias uses, nesting depth and the number of values
    the document holds once every alias is expanded (an anchor's size is known when it closes).
    A billion-laughs bomb is refused after a few dozen events; nothing is ever expanded.
    """
    sizes: dict[str, int] = {}
    open_: list[tuple[str | None, int]] = []  # (anchor, expanded count when it opened)
    expanded = aliases = 0
    what = "a model spec is small, hand-written YAML: write the values out"
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > SPEC_MAX_ALIASES:
                raise SpecError(
                    f"{source}: refused: more than {SPEC_MAX_ALIASES} YAML aliases (*name); {what}"
                )
            anchor = str(event.anchor)
            if anchor in sizes:
                expanded += sizes[anchor]
            elif any(a == anchor for a, _ in open_):
                raise SpecError(
                    f"{source}: refused: the YAML alias *{anchor} refers to a value that "
                    f"contains it (a recursive structure); {what}"
                )
        elif isinstance(event, yaml.ScalarEvent):
            expanded += 1
            if event.anchor:
                sizes[str(event.anchor)] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            expanded += 1
            open_.append((event.anchor, expanded - 1))
            if len(open_) > SPEC_MAX_DEPTH:
                raise SpecError(
                    f"{source}: refused: YAML nested more than {SPEC_MAX_DEPTH} levels deep; {what}"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            opened, start = open_.pop()
            if opened:
                sizes[str(opened)] = expanded - start
        if expanded > SPEC_MAX_NODES:
            raise SpecError(
                f"{source}: refused: the YAML holds more than {SPEC_MAX_NODES:,} values once its "
                f"aliases are expanded (an alias bomb?); {what}"
            )


def read_spec_yaml(path: str | Path) -> Any:
    """The parsed YAML of a spec file, within the limits: size, aliases, depth, expanded values."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(SPEC_MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the model spec ({exc.strerror or exc})") from None
    if len(data) > SPEC_MAX_BYTES:
        raise SpecError(
            f"{path}: refused: larger than {SPEC_MAX_BYTES // 1024} KiB; a model spec is a short "
            "YAML file (point data.train at the data instead of inlining it)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        _check_yaml_shape(text, str(path))
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None


def load_spec(path: str | Path, estimator_modules: Sequence[str] | None = None) -> ModelSpec:
    path = Path(path)
    raw = read_spec_yaml(path)
    try:
        spec = parse_spec(raw, str(path), estimator_modules)
    except SpecError as exc:
        exc.team = declared_team(raw)
        raise
    if path.stem != spec.name:
        misnamed = SpecError(
            f"{path}: name: expected the file name {path.stem!r} (one spec per file, named after "
            f"the model); found {spec.name!r}"
        )
        misnamed.team = spec.team
        raise misnamed
    return spec


def declared_team(raw: Any) -> str | None:
    """The team a spec's YAML names (`access_control.team`), if it names a valid one, whatever
    else is wrong with the spec."""
    access = raw.get("access_control") if isinstance(raw, dict) else None
    team = access.get("team") if isinstance(access, dict) else None
    return team if isinstance(team, str) and re.fullmatch(TEAM_PATTERN, team) else None


def spec_files(models_dir: str | Path) -> list[Path]:
    root = Path(models_dir)
    # regular files only: a FIFO or a device named *.yaml would block the reader (and the DAG
    # processor) forever
    return sorted(p for p in root.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())


def iter_specs(
    models_dir: str | Path, estimator_modules: Sequence[str] | None = None
) -> Iterator[tuple[Path, ModelSpec | SpecError]]:
    """Every spec in the folder, each either loaded or with its error: one bad file hides nothing."""
    for path in spec_files(models_dir):
        try:
            spec: ModelSpec | SpecError = load_spec(path, estimator_modules)
        except SpecError as exc:
            spec = exc
        except Exception as exc:  # a check that failed unforeseen still hides only this file
            spec = SpecError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})")
        yield path, spec


def find_spec(models_dir: str | Path, name: str) -> ModelSpec:
    root = Path(models_dir)
    candidate = Path(name)
    try:
        given = candidate.suffix in (".yaml", ".yml") and candidate.exists()
    except OSError:  # a name too long for a path
        given = False
    if given:
        return load_spec(candidate)
    for path in spec_files(root):
        if path.stem == name:
            return load_spec(path)
    known = [p.stem for p in spec_files(root)]
    raise SpecError(
        f"no model spec named {name[:100]!r} in {root}; known models: {known or 'none'}"
    )
