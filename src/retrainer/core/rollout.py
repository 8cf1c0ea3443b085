"""The rollout decisions, as data: shadow (pass or stop) and canary (hold, next, promote, roll back).

Inputs are serving's rollout status (the contract's GET body: per-role counts, errors, p99, and
the mirrored rows' agreement) and, where delayed labels arrived, the gate's paired comparison of
the two versions on the mirrored rows (`core.comparison.compare`, the gate's statistics). Each
decision is a record like the gate's, following `schemas/rollout_decision.schema.json`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

from retrainer.spec import RolloutSpec

if TYPE_CHECKING:  # scipy.stats: 0.7 s of every rollout task's start, for a type name
    from retrainer.core.comparison import Comparison

Outcome = Literal["pass", "stop", "hold", "next", "promote", "rollback"]
# p99 differences under this many milliseconds always pass: at sub-millisecond predict times the
# ratio of two p99s measures timer and scheduling noise, not the model.
P99_FLOOR_MS = 2.0
# A p99 of fewer calls rests on fewer than 10 calls above it: a few pauses of the machine, not
# the model (measured: two identical versions, 117-146 pairs on a loaded two-core machine, gave
# p99 ratios of 1.7-2.0 on the same rows). A paired call comes about once a second in shadow
# and once per 4 challenger batches in canary, so a long bake is judged and a short one is not.
P99_MIN_CALLS = 1000
SCHEMA = "rollout_decision.schema.json"


@dataclass(frozen=True)
class RoleStats:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    fallbacks: int = 0
    predict_p99_ms: float | None = None

    @property
    def error_rate(self) -> float:
        """Failed requests over attempted ones (a failure is not counted as answered)."""
        attempted = self.requests + self.errors
        return self.errors / attempted if attempted else 0.0


@dataclass(frozen=True)
class Mirrored:
    rows: int = 0
    dropped: int = 0
    agree: int = 0
    disagree_by_class: dict[str, int] = field(default_factory=dict)
    mean_abs_rel_diff: float | None = None


@dataclass(frozen=True)
class PairedLatency:
    """Shadow: both versions timed on the same mirrored rows, in the shadow's process."""

    calls: int = 0
    challenger_p99_ms: float | None = None
    champion_p99_ms: float | None = None


@dataclass(frozen=True)
class RolloutStatus:
    """Serving's answer to GET /models/{name}/rollout (README: Shadow and canary in serving)."""

    model: str
    mode: str
    champion: str | None
    challenger: str | None
    fraction: float | None
    key: str | None
    step_started: str | None
    champion_stats: RoleStats
    challenger_stats: RoleStats
    mirrored: Mirrored
    paired_latency: PairedLatency = field(default_factory=PairedLatency)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RolloutStatus:
        stats = body.get("stats") or {}

        def part(kind: type[Any], name: str) -> Any:
            known = kind.__dataclass_fields__
            return kind(**{k: v for k, v in (stats.get(name) or {}).items() if k in known})

        return cls(
            model=str(body.get("model", "")),
            mode=str(body.get("mode", "none")),
            champion=None if body.get("champion") is None else str(body["champion"]),
            challenger=None if body.get("challenger") is None else str(body["challenger"]),
            fraction=body.get("fraction"),
            key=body.get("key"),
            step_started=body.get("step_started"),
            champion_stats=part(RoleStats, "champion"),
            challenger_stats=part(RoleStats, "challenger"),
            mirrored=part(Mirrored, "mirrored"),
            paired_latency=part(PairedLatency, "paired_latency"),
        )


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float | None
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class RolloutDecision:
    stage: Literal["shadow", "canary"]
    outcome: Outcome
    reasons: list[str]
    checks: list[Check]
    champion_version: str | None
    challenger_version: str | None
    fraction: float | None = None
    step: int | None = None  # canary: index into canary_steps
    elapsed_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.outcome in ("stop", "rollback")

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutDecision:
        data = dict(data)
        data["checks"] = [Check(**c) for c in data.get("checks", [])]
        return cls(**data)

    def table(self) -> str:
        head = f"{'check':<16} {'value':>10} {'limit':>10}  result"
        lines = [f"{self.stage}: {self.outcome}", head, "-" * len(head)]
        for c in self.checks:
            value = "-" if c.value is None else f"{c.value:.4g}"
            limit = "-" if c.limit is None else f"{c.limit:.4g}"
            lines.append(
                f"{c.name:<16} {value:>10} {limit:>10}  {'ok' if c.passed else 'FAIL'}"
                + (f"  ({c.note})" if c.note else "")
            )
        return "\n".join(lines + [f"- {r}" for r in self.reasons])


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Wilson score lower bound of a proportion (0 with no trials)."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def shadow_ready(rollout: RolloutSpec, status: RolloutStatus, elapsed_seconds: float) -> bool:
    """Enough mirrored rows to decide, or the shadow's time is up (decide on what was seen)."""
    return (
        status.mirrored.rows >= rollout.min_rows or elapsed_seconds >= rollout.max_duration_seconds
    )


def _p99_check(
    ours: float | None, theirs: float | None, calls: int, max_ratio: float, how: str
) -> Check:
    if ours is None or theirs is None:
        return Check("p99_ratio", None, max_ratio, True, "no predict calls timed for one role yet")
    if calls < P99_MIN_CALLS:
        return Check(
            "p99_ratio",
            None,
            max_ratio,
            True,
            f"not judged: {calls} {how} < {P99_MIN_CALLS} in this step",
        )
    ratio = ours / theirs if theirs > 0 else math.inf
    passed = ratio <= max_ratio or ours - theirs <= P99_FLOOR_MS
    note = f"challenger {ours:.2f} ms vs champion {theirs:.2f} ms, {calls} {how}"
    if ratio > max_ratio and passed:
        note += f" (within the {P99_FLOOR_MS:g} ms floor)"
    return Check("p99_ratio", ratio if math.isfinite(ratio) else None, max_ratio, passed, note)


def _latency_check(status: RolloutStatus, max_ratio: float) -> Check:
    """The paired timings: both versions on the same rows, back to back, in turns, in the
    shadow's process (mirrored rows in shadow, canary rows in canary). The versions' own p99s are
    not comparable: in shadow the challenger predicts mirrored batches of many rows while the
    champion answers live requests of a few; in canary the challenger predicts in a thread
    (isolated, so a slow one never stalls the event loop) while the champion runs on the loop,
    and the thread's calls include waits for the GIL that say nothing about the model."""
    p = status.paired_latency
    return _p99_check(
        p.challenger_p99_ms,
        p.champion_p99_ms,
        p.calls,
        max_ratio,
        "paired calls on the same rows",
    )


def _error_check(challenger: RoleStats, max_rate: float) -> Check:
    rate = challenger.error_rate
    note = f"{challenger.errors} failed of {challenger.requests + challenger.errors} requests"
    if challenger.fallbacks:
        note += f", {challenger.fallbacks} answered by the champion instead"
    return Check("error_rate", rate, max_rate, rate <= max_rate, note)


def disagreement(mirrored: Mirrored, top: int = 3) -> str:
    """The disagreements named by class, largest first: 'bad->good 40, good->bad 3'."""
    items = sorted(
        ((k, int(v)) for k, v in mirrored.disagree_by_class.items() if v),
        key=lambda kv: (-kv[1], kv[0]),
    )
    return ", ".join(f"{k} {v}" for k, v in items[:top]) or "none"


def decide_shadow(
    task: Literal["classification", "regression"],
    rollout: RolloutSpec,
    status: RolloutStatus,
    elapsed_seconds: float,
    paired: Comparison | None = None,
    primary_metric: str | None = None,
    segments: list[dict[str, Any]] | None = None,
) -> RolloutDecision:
    """Pass the challenger on to canary (or promotion), or stop it, from what shadow saw.

    ``paired``: the gate's comparison (challenger as candidate) on the mirrored rows whose
    delayed labels arrived; ``segments``: where the two disagree most, by feature value.
    """
    m = status.mirrored
    checks: list[Check] = []
    reasons: list[str] = []
    if m.rows == 0:
        checks.append(Check("mirrored_rows", 0, rollout.min_rows, False, "nothing to decide on"))
        reasons.append(
            f"no mirrored rows in {elapsed_seconds:.0f} s; is traffic reaching serving, and is "
            "the challenger loaded (GET /models/{name}/rollout)?"
        )
    else:
        short = m.rows < rollout.min_rows
        checks.append(
            Check(
                "mirrored_rows",
                m.rows,
                rollout.min_rows,
                True,
                "max_duration reached: decided on the rows seen" if short else "",
            )
        )
        if task == "classification":
            lower = wilson_lower(m.agree, m.rows)
            passed = lower >= rollout.min_agreement
            checks.append(
                Check(
                    "agreement",
                    m.agree / m.rows,
                    rollout.min_agreement,
                    passed,
                    f"95% lower bound {lower:.4f} (Wilson) on {m.rows} rows",
                )
            )
            if not passed:
                where = disagreement(m)
                seg = _segments_text(segments)
                reasons.append(
                    f"agreement with the champion {m.agree / m.rows:.2%} (lower bound {lower:.2%}) "
                    f"is below min_agreement {rollout.min_agreement:.2%}; disagreements by class "
                    f"(champion->challenger): {where}" + (f"; most in {seg}" if seg else "")
                )
        else:
            diff = m.mean_abs_rel_diff
            passed = diff is not None and diff <= rollout.max_relative_difference
            checks.append(
                Check(
                    "relative_diff",
                    diff,
                    rollout.max_relative_difference,
                    passed,
                    "mean |challenger - champion| / |champion|",
                )
            )
            if not passed:
                seg = _segments_text(segments)
                reasons.append(
                    f"mean relative difference to the champion {diff if diff is None else round(diff, 4)} "
                    f"exceeds max_relative_difference {rollout.max_relative_difference:g}"
                    + (f"; most in {seg}" if seg else "")
                )
    _slo_checks(rollout, status, checks, reasons)
    extra: dict[str, Any] = {"dropped": m.dropped, "disagree_by_class": dict(m.disagree_by_class)}
    if segments:
        extra["segments"] = segments
    if paired is not None and primary_metric in paired.metrics:
        mc = paired.metrics[primary_metric]
        checks.append(
            Check(f"paired_{primary_metric}", mc.improvement, -mc.margin, mc.passed, mc.method)
        )
        if not mc.passed:
            reasons.append(f"on {mc.rows} labelled mirrored rows: {mc.reason()}")
        extra["paired"] = paired.to_dict()
    else:
        extra["paired"] = None
        checks.append(Check("paired", None, None, True, "no delayed labels for mirrored rows yet"))
    passed = all(c.passed for c in checks)
    if passed:
        reasons.insert(0, "the challenger agrees with the champion and keeps its SLOs")
    return RolloutDecision(
        stage="shadow",
        outcome="pass" if passed else "stop",
        reasons=reasons,
        checks=checks,
        champion_version=status.champion,
        challenger_version=status.challenger,
        fraction=status.fraction,
        elapsed_seconds=elapsed_seconds,
        extra=extra,
    )


def _segments_text(segments: list[dict[str, Any]] | None) -> str:
    if not segments:
        return ""
    return ", ".join(
        f"{s['column']}={s['value']} ({s['disagree']} of {s['rows']} rows disagree)"
        for s in segments[:3]
    )


def _slo_checks(
    rollout: RolloutSpec, status: RolloutStatus, checks: list[Check], reasons: list[str]
) -> None:
    for check in (
        _error_check(status.challenger_stats, rollout.slo.max_error_rate),
        _latency_check(status, rollout.slo.max_p99_ratio),
    ):
        checks.append(check)
        if not check.passed:
            reasons.append(
                f"{check.name} {check.value if check.value is None else round(check.value, 4)} "
                f"breaches its limit {check.limit:g} ({check.note})"
            )


def decide_canary(
    rollout: RolloutSpec,
    status: RolloutStatus,
    step: int,
    elapsed_seconds: float,
    labelled: dict[str, Any] | None = None,
) -> RolloutDecision:
    """At one check of a canary step: roll back on any SLO breach (at once, bake time or not);
    otherwise hold until the step has baked, then the next step, or promote after the last.

    ``labelled``: {"metric", "challenger", "champion", "rows", "lower_is_better"} measured on
    the delayed labels of the rows each version answered in this step, when they exist.
    """
    checks: list[Check] = []
    reasons: list[str] = []
    _slo_checks(rollout, status, checks, reasons)
    if labelled and labelled.get("rows"):
        chal, champ = float(labelled["challenger"]), float(labelled["champion"])
        drop = chal - champ if labelled.get("lower_is_better") else champ - chal
        passed = drop <= rollout.slo.max_metric_drop
        checks.append(
            Check(
                f"{labelled['metric']}_drop",
                drop,
                rollout.slo.max_metric_drop,
                passed,
                f"challenger {chal:.4f} vs champion {champ:.4f} on {labelled['rows']} labelled rows",
            )
        )
        if not passed:
            reasons.append(
                f"{labelled['metric']} of the challenger is {drop:.4f} worse than the champion's "
                f"(max_metric_drop {rollout.slo.max_metric_drop:g})"
            )
    if status.mode != "canary" or status.challenger is None:
        checks.append(Check("in_traffic", None, None, False, f"serving says mode {status.mode}"))
        reasons.append("serving has no canary in progress (restarted?); it will be put back")
    breached = any(not c.passed for c in checks if c.name != "in_traffic")
    last = step == len(rollout.canary_steps) - 1
    outcome: Outcome
    if breached:
        outcome = "rollback"
    elif elapsed_seconds < rollout.bake_seconds or status.mode != "canary":
        outcome = "hold"
        reasons.insert(0, f"baking: {elapsed_seconds:.0f} of {rollout.bake_seconds:.0f} s")
    elif not status.challenger_stats.requests:  # kept its SLOs on nothing: not a pass
        outcome = "hold"
        reasons.insert(
            0,
            f"baked {elapsed_seconds:.0f} s but the challenger answered no request in this step "
            "yet (no traffic, or serving restarted): holding until it has",
        )
    else:
        outcome = "promote" if last else "next"
        reasons.insert(
            0,
            f"step {step + 1} of {len(rollout.canary_steps)} "
            f"({rollout.canary_steps[step]:.0%}) kept its SLOs for its bake time",
        )
    return RolloutDecision(
        stage="canary",
        outcome=outcome,
        reasons=reasons,
        checks=checks,
        champion_version=status.champion,
        challenger_version=status.challenger,
        fraction=rollout.canary_steps[step],
        step=step,
        elapsed_seconds=elapsed_seconds,
        extra={"labelled": labelled},
    )
