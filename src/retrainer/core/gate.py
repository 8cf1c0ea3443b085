"""The promotion decision, as data: passed or not, why, and the metric table behind it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from retrainer.spec import LOWER_IS_BETTER, ModelSpec


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    candidate: float
    champion: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    delta: float | None = None  # candidate - champion, signed so that positive means better
    passed: bool = True
    note: str = ""
    lower: float | None = None  # one-sided lower confidence bound of delta (paired test)
    p_value: float | None = None  # one-sided, H0: delta <= the bar
    method: str = ""  # the paired test that decided (delong, mcnemar_score, ...)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    primary_metric: str
    reasons: list[str]
    checks: list[MetricCheck]
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None
    min_improvement: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # airflow_run, mlflow_run, model_version (the champion compared with) and, once registered,
    # candidate_version: filled in by the step that logs the record
    links: dict[str, str | None] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "rejected"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = self.decision
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        data = {k: v for k, v in data.items() if k != "decision"}
        data["checks"] = [MetricCheck(**c) for c in data.get("checks", [])]
        return cls(**data)

    def table(self) -> str:
        """The metric table as fixed-width text, for task logs and the CLI."""
        head = (
            f"{'metric':<10} {'candidate':>10} {'champion':>10} {'delta':>9} {'bound':>14}  result"
        )
        lines = [head, "-" * len(head)]
        for c in self.checks:
            bound = []
            if c.minimum is not None:
                bound.append(f">={c.minimum:g}")
            if c.maximum is not None:
                bound.append(f"<={c.maximum:g}")
            champion = "-" if c.champion is None else f"{c.champion:.4f}"
            delta = "-" if c.delta is None else f"{c.delta:+.4f}"
            paired = (
                f"  [lower {c.lower:+.4f}, p={c.p_value:.3g}, {c.method}]"
                if c.lower is not None and c.p_value is not None
                else ""
            )
            lines.append(
                f"{c.metric:<10} {c.candidate:>10.4f} {champion:>10} {delta:>9} "
                f"{' '.join(bound) or '-':>14}  {'ok' if c.passed else 'FAIL'}"
                + paired
                + (f"  ({c.note})" if c.note else "")
            )
        for report in self.extra.get("slices", []):
            for sl in report.get("slices", []):
                if sl.get("p_harm") is None:
                    continue
                lines.append(
                    f"  slice {report['column']}={sl['slice']}: {sl['rows']} rows, improvement "
                    f"{sl['improvement']:+.4f}, p(harm) Holm {sl['p_harm_holm']:.3g}"
                    + ("  HARMED" if sl["harmed"] else "")
                )
        return "\n".join(lines)

    def summary(self) -> str:
        vs = f"champion v{self.champion_version}" if self.champion_version else "no champion yet"
        head = f"Gate {self.decision.upper()} on {self.primary_metric} ({vs})"
        return head + "\n" + "\n".join(f"  - {r}" for r in self.reasons) + "\n" + self.table()


def improvement(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is, positive when better, whatever the metric's direction."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def decide(
    spec: ModelSpec,
    candidate: dict[str, float],
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
    champion_error: str = "",
    comparison: dict[str, Any] | None = None,
    slices: list[dict[str, Any]] | None = None,
) -> GateDecision:
    """Absolute thresholds, then the candidate against the champion on the same test split.

    With ``comparison`` (``core.comparison.Comparison.to_dict()`` of the two models on the test
    rows) the primary metric must clear the spec's paired rule (superiority or
    non-inferiority at its confidence); without it, or with ``gate.comparison: point``, the
    point rule: improvement >= min_improvement. ``slices`` (``SliceReport.to_dict()`` each)
    reject the candidate when a slice is significantly harmed (Holm-corrected).
    A champion that exists but can't be scored on this split rejects the candidate: promoting
    without a comparison would skip the gate's second half silently.
    """
    gate = spec.gate
    paired = (comparison or {}).get("metrics", {}) if gate.rule != "point" else {}
    reasons: list[str] = []
    checks: list[MetricCheck] = []
    passed = True
    if champion_error:
        passed = False
        reasons.append(
            f"the champion v{champion_version} could not be scored on this test split "
            f"({champion_error}); fix the data or roll the champion forward by hand"
        )
    metrics = [gate.primary_metric] + [m for m in gate.thresholds if m != gate.primary_metric]
    for metric in metrics:
        if metric not in candidate:
            passed = False
            reasons.append(f"{metric}: the candidate has no value for it")
            continue
        value = candidate[metric]
        bound = gate.thresholds.get(metric)
        champ = champion.get(metric) if champion else None
        unmeasured = [
            (who, v) for who, v in (("candidate", value), ("champion", champ)) if not _finite(v)
        ]
        if unmeasured:  # NaN compares false with every bound: it would pass them all
            passed = False
            who, v = unmeasured[0]
            reasons.append(
                f"{metric}: the {who}'s value on the test split is {v}, not a number (a test "
                "split with one class only, or labels the model was not trained on?); check "
                "the target's values in the data and retrain"
            )
            checks.append(
                MetricCheck(
                    metric=metric,
                    candidate=value,
                    champion=champ,
                    passed=False,
                    note=f"the {who}'s value is not a number",
                )
            )
            continue
        ok, notes = True, []
        if bound is not None and bound.min is not None and value < bound.min:
            ok = False
            notes.append(f"below the minimum {bound.min:g}")
            reasons.append(f"{metric} {value:.4f} is below the threshold min {bound.min:g}")
        if bound is not None and bound.max is not None and value > bound.max:
            ok = False
            notes.append(f"above the maximum {bound.max:g}")
            reasons.append(f"{metric} {value:.4f} is above the threshold max {bound.max:g}")
        delta = improvement(metric, value, champ) if champ is not None else None
        test = paired.get(metric) if champ is not None else None
        if metric == gate.primary_metric and test is not None:
            if not test["passed"]:
                ok = False
                notes.append(f"{test['comparison']} not shown")
                reasons.append(
                    f"{metric} {value:.4f} vs champion v{champion_version} {champ:.4f}: "
                    f"improvement {test['improvement']:+.4f}, {test['confidence']:.0%} lower bound "
                    f"{test['lower']:+.4f} ({test['method']}, p={test['p_value']:.3g}) is not above "
                    f"{test['threshold']:+g} ({test['comparison']}, margin {test['margin']:g})"
                )
        elif metric == gate.primary_metric and delta is not None and delta < gate.min_improvement:
            ok = False
            notes.append(f"improvement {delta:+.4f} < required {gate.min_improvement:g}")
            reasons.append(
                f"{metric} {value:.4f} vs champion v{champion_version} {champ:.4f}: improvement "
                f"{delta:+.4f} is less than min_improvement {gate.min_improvement:g}"
            )
        passed = passed and ok
        checks.append(
            MetricCheck(
                metric=metric,
                candidate=value,
                champion=champ,
                minimum=bound.min if bound else None,
                maximum=bound.max if bound else None,
                delta=delta,
                passed=ok,
                note="; ".join(notes),
                lower=test["lower"] if test else None,
                p_value=test["p_value"] if test else None,
                method=test["method"] if test else "",
            )
        )
    for report in slices or []:
        for sl in report.get("slices", []):
            if sl.get("harmed"):
                passed = False
                reasons.append(
                    f"slice {report['column']}={sl['slice']} ({sl['rows']} rows): "
                    f"{report['metric']} {sl['candidate']:.4f} vs champion {sl['champion']:.4f}, "
                    f"worse by more than slice_margin {report['slice_margin']:g} "
                    f"(Holm-adjusted p={sl['p_harm_holm']:.3g})"
                )
    if passed and checks:
        primary = checks[0]
        if primary.delta is None:
            reasons.append(
                f"{gate.primary_metric} {primary.candidate:.4f} meets every threshold; there is no "
                "champion yet, so this candidate becomes the first one"
            )
        elif primary.lower is not None:
            test = paired[gate.primary_metric]
            reasons.append(
                f"{gate.primary_metric} {primary.candidate:.4f} meets every threshold; vs champion "
                f"v{champion_version}: improvement {primary.delta:+.4f}, "
                f"{test['confidence']:.0%} lower bound {test['lower']:+.4f} ({test['method']}, "
                f"p={test['p_value']:.3g}) above {test['threshold']:+g} ({test['comparison']}, "
                f"margin {test['margin']:g})"
            )
        else:
            reasons.append(
                f"{gate.primary_metric} {primary.candidate:.4f} meets every threshold and improves on "
                f"champion v{champion_version} by {primary.delta:+.4f} "
                f"(required {gate.min_improvement:g})"
            )
    return GateDecision(
        passed=passed,
        primary_metric=gate.primary_metric,
        reasons=reasons,
        checks=checks,
        candidate_metrics=dict(candidate),
        champion_metrics=dict(champion) if champion else None,
        champion_version=champion_version,
        min_improvement=gate.min_improvement,
        extra={
            "rule": gate.rule if paired else "point",
            "margin": gate.effective_margin,
            "confidence": gate.confidence,
            **({"comparison": comparison} if comparison else {}),
            **({"slices": slices} if slices else {}),
        },
    )


def _finite(value: Any) -> bool:
    """A metric value the gate can compare: a finite number, or absent (None: no champion)."""
    if value is None:
        return True
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
