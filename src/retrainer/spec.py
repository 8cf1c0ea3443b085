"""The model spec: the user's contract, one YAML file per model (see DESIGN.md).

Loading is strict: unknown keys, wrong types and inconsistent choices fail with the file, the key,
what was expected and what was found. This module imports no heavy library so that DAG files can
read specs at parse time.
"""

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrainer.errors import SpecError

CLASSIFICATION_METRICS = ("roc_auc", "f1", "accuracy", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster at parse time
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '12h', '1d', '2w' or a number of seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"expected a duration like 30m, 12h, 1d or 2w; found {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


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
    random_state: int = 42


class ColumnCheck(_Strict):
    min: float | None = None
    max: float | None = None
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
                f"expected a dotted class path like sklearn.linear_model.Ridge; found {value!r}"
            )
        return value


class Bound(_Strict):
    min: float | None = None
    max: float | None = None


class GateSpec(_Strict):
    primary_metric: str
    thresholds: dict[str, Bound] = Field(default_factory=dict)
    min_improvement: float = Field(default=0.0, ge=0.0)


class MonitoringSpec(_Strict):
    schedule: str | None = "@daily"
    psi_bins: int = Field(default=10, ge=2, le=100)
    psi_warn: float = Field(default=0.1, gt=0.0)
    psi_retrain: float = Field(default=0.25, gt=0.0)
    min_rows: int = Field(default=200, ge=1)
    cooldown: str = "1d"

    @model_validator(mode="after")
    def _order(self) -> "MonitoringSpec":
        try:
            parse_duration(self.cooldown)
        except ValueError as exc:
            raise ValueError(f"cooldown: {exc}") from None
        if self.psi_warn > self.psi_retrain:
            raise ValueError(
                f"psi_warn ({self.psi_warn}) must not exceed psi_retrain ({self.psi_retrain})"
            )
        return self


class DeploymentSpec(_Strict):
    approval: Literal["auto", "manual"] = "auto"


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


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    task: Literal["classification", "regression"]
    description: str = ""
    owner: str = "retrainer"
    data: DataSpec
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    model: ModelConfig
    gate: GateSpec
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    alerts: list[AlertRoute] = Field(default_factory=list)

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

    def metrics(self) -> tuple[str, ...]:
        return CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    key = _location(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    found = err.get("input")
    msg = err.get("msg", "")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (found {found!r}); check the spelling against DESIGN.md"
    shown = repr(found)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if msg.startswith("Value error, "):  # our own validators say expected/found themselves
        return f"{key}: {msg[len('Value error, ') :]}"
    return f"{key}: expected {msg[0].lower() + msg[1:] if msg else kind}; found {shown}"


def parse_spec(raw: Any, source: str = "<spec>") -> ModelSpec:
    """Validate a parsed YAML document. Raises SpecError naming the source and every bad key."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: expected a mapping of keys (name, task, data, ...); found {type(raw).__name__}"
        )
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise SpecError(f"{source}: invalid model spec\n  - " + "\n  - ".join(lines)) from None


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the model spec ({exc.strerror or exc})") from None
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    spec = parse_spec(raw, str(path))
    if path.stem != spec.name:
        raise SpecError(
            f"{path}: name: expected the file name {path.stem!r} (one spec per file, named after "
            f"the model); found {spec.name!r}"
        )
    return spec


def spec_files(models_dir: str | Path) -> list[Path]:
    root = Path(models_dir)
    return sorted(p for p in root.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def iter_specs(models_dir: str | Path) -> Iterator[tuple[Path, ModelSpec | SpecError]]:
    """Every spec in the folder, each either loaded or with its error: one bad file hides nothing."""
    for path in spec_files(models_dir):
        try:
            yield path, load_spec(path)
        except SpecError as exc:
            yield path, exc


def find_spec(models_dir: str | Path, name: str) -> ModelSpec:
    root = Path(models_dir)
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return load_spec(candidate)
    for path in spec_files(root):
        if path.stem == name:
            return load_spec(path)
    known = [p.stem for p in spec_files(root)]
    raise SpecError(f"no model spec named {name!r} in {root}; known models: {known or 'none'}")
