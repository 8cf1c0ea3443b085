"""The monitor's decision as data: ok / warn / retrain / insufficient_data / schema_changed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    from retrainer.core.drift import DriftResult

OK, WARN, RETRAIN = "ok", "warn", "retrain"
INSUFFICIENT = "insufficient_data"
SCHEMA_CHANGED = "schema_changed"
NO_CHAMPION = "no_champion"
DECIDED = (OK, WARN, RETRAIN, SCHEMA_CHANGED)  # decisions that consume their window
META_COLUMNS = ("_request_id", "_row", "_ts", "_model_version", "_prediction", "_score", "_role")


@dataclass
class LabelCheck:
    """The champion scored on labels that arrived for the window (delayed ground truth)."""

    rows: int
    metric: str
    value: float | None = None
    threshold: float | None = None
    below_threshold: bool = False
    note: str = ""


@dataclass
class MonitorDecision:
    decision: str
    reasons: list[str]
    features: list[str]  # the features responsible (drifted, or with a schema problem)
    psi: dict[str, float | None]
    max_psi: float | None
    drift_share: float
    rows: int
    psi_warn: float
    psi_retrain: float
    noise_floor: float | None
    window: dict[str, Any] = field(default_factory=dict)
    champion_version: str | None = None
    labels: dict[str, Any] | None = None
    problems: dict[str, str] = field(default_factory=dict)
    significance: dict[str, Any] | None = None  # per feature: test, p, BH-adjusted p, verdict
    drifted: list[str] = field(default_factory=list)  # PSI and significance in this window
    estimate: dict[str, Any] | None = None  # label-free estimate of the primary metric (CBPE)
    weighted_psi: float | None = None  # PSI averaged with the champion's feature importances
    # airflow_run, mlflow_run, model_version (the champion monitored): set by measure_drift
    links: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        head = f"{self.decision}: " + "; ".join(self.reasons)
        top = sorted(((v, k) for k, v in self.psi.items() if v is not None), reverse=True)[:5]
        table = ", ".join(f"{k} {v:.3f}" for v, k in top)
        counted = f"{self.rows}"
        if self.window.get("logged_rows"):
            counted += f" (a random sample of {self.window['logged_rows']} logged: max_rows)"
        out = f"{head}\nrows {counted}; top PSI: {table or 'n/a'}"
        if self.estimate:
            e = self.estimate
            out += (
                f"\nestimated {e['metric']} (no labels) {e['estimated']:.4f} vs reference "
                f"{e['reference']:.4f}: drop {e['drop']:+.4f}"
            )
            sup = e.get("support")
            if sup:
                out += (
                    f"; {sup['outside_share']:.0%} of the rows outside the reference's support "
                    f"(limit {sup['limit']:.0%}): "
                    + ("trusted" if sup["within"] else "not trusted")
                )
        if self.significance:
            rows = [f"{'feature':<16} {'PSI':>7} {'floor':>7} {'p (BH)':>9}  test          verdict"]
            feats = self.significance["features"].values()
            for f in sorted(feats, key=lambda f: -(f["psi"] or 0.0)):
                test = (f["test"] or {}).get("method", "-")
                p = "-" if f["p_adjusted"] is None else f"{f['p_adjusted']:.2g}"
                floor = "-" if f["noise_floor"] is None else f"{f['noise_floor']:.3f}"
                psi = "-" if f["psi"] is None else f"{f['psi']:.3f}"
                verdict = (
                    "drifted"
                    if f["drifted"]
                    else "excluded"
                    if not f["in_trigger"]
                    else "not significant"
                    if f["large"]
                    else ""
                )
                rows.append(f"{f['name']:<16} {psi:>7} {floor:>7} {p:>9}  {test:<13} {verdict}")
            out += "\n" + "\n".join(rows)
        return out


def decide(
    spec: ModelSpec,
    drift: DriftResult | None,
    rows: int,
    labels: LabelCheck | None = None,
    window: dict[str, Any] | None = None,
    champion_version: str | None = None,
    previous: list[list[str]] | None = None,
    estimate: dict[str, Any] | None = None,
    weighted_psi: float | None = None,
) -> MonitorDecision:
    """ok / warn / retrain / insufficient_data / schema_changed, with the features responsible.

    Order: too few rows decides nothing; a schema change is an alert for people (retraining
    on broken inputs would not help); then a feature whose PSI is at or over psi_retrain AND
    whose bucket counts differ significantly (BH-adjusted across features at monitoring.fdr;
    features in monitoring.exclude never trigger), or the champion under its gate threshold on
    delayed labels, is a retrain; psi_warn (or a large PSI that sampling noise explains) a
    warning. With monitoring.consecutive k > 1 a feature must also have drifted in the k - 1
    previous decided windows (``previous``: their drifted features, oldest first). With
    monitoring.max_estimated_drop, a drift-only retrain also needs the primary metric to have
    dropped that much: measured on delayed labels when they arrived, else estimated without
    labels (``estimate``: ``core.cbpe.EstimatedDrop.to_dict()``); with neither, drift decides.
    """
    from retrainer.core.drift import noise_floor
    from retrainer.core.significance import drift_significance

    mon = spec.monitoring
    psi = {k: v for k, v in (drift.psi.items() if drift else [])}
    finite = {k: v for k, v in psi.items() if v is not None and math.isfinite(v)}
    max_psi = max(finite.values()) if finite else None
    warned = sorted((k for k, v in finite.items() if v >= mon.psi_warn), key=lambda k: -finite[k])
    large = [k for k in warned if finite[k] >= mon.psi_retrain]
    sig = None
    if drift is not None and large and rows >= mon.min_rows:
        sig = drift_significance(drift, mon.psi_retrain, mon.fdr, mon.exclude)
    now = [k for k in large if sig is not None and sig.features[k].drifted]
    noise = [k for k in large if k not in now]
    drifted, waiting = now, []
    if mon.consecutive > 1:
        from retrainer.core.significance import persistent

        lasting = set(persistent([*(previous or []), now], mon.consecutive))
        drifted = [k for k in now if k in lasting]
        waiting = [k for k in now if k not in lasting]
    problems = drift.problems if drift else {}
    buckets = max((len(f.reference) for f in drift.features.values()), default=0) if drift else 0
    floor = noise_floor(buckets, rows, drift.rows_reference) if drift and buckets else None
    base = {
        "psi": {k: (v if v is not None and math.isfinite(v) else None) for k, v in psi.items()},
        "max_psi": max_psi,
        "drift_share": len(warned) / len(psi) if psi else 0.0,
        "rows": rows,
        "psi_warn": mon.psi_warn,
        "psi_retrain": mon.psi_retrain,
        "noise_floor": floor if floor is None or math.isfinite(floor) else None,
        "window": window or {},
        "champion_version": champion_version,
        "labels": asdict(labels) if labels else None,
        "problems": problems,
        "significance": sig.to_dict() if sig else None,
        "drifted": now,
        "estimate": estimate,
        "weighted_psi": weighted_psi,
    }
    if rows < mon.min_rows:
        return MonitorDecision(
            INSUFFICIENT,
            [
                f"{rows} rows in the window, fewer than monitoring.min_rows ({mon.min_rows}); "
                "the rows stay in the next check's window"
            ],
            [],
            **base,  # type: ignore[arg-type]
        )
    if problems:
        return MonitorDecision(
            SCHEMA_CHANGED,
            [f"{k}: {v}" for k, v in problems.items()]
            + ["fix the producer of the traffic (or the spec); no retrain is triggered"],
            sorted(problems),
            **base,  # type: ignore[arg-type]
        )
    assert sig is not None or not drifted
    reasons = [
        f"PSI {k} {finite[k]:.3f} >= psi_retrain {mon.psi_retrain:g} and significant "
        f"(BH-adjusted p {sig.features[k].p_adjusted:.2g} <= fdr {mon.fdr:g})"  # type: ignore[union-attr]
        for k in drifted
    ]
    if labels and labels.below_threshold:
        reasons.append(
            f"{labels.metric} {labels.value:.4f} on {labels.rows} labelled rows "
            f"breaks the gate threshold {labels.threshold:g}"
        )
    label_reason = bool(labels and labels.below_threshold)
    if drifted and not label_reason and mon.max_estimated_drop is not None:
        # outside the calibration's support the estimate cannot vouch for the model: drift decides
        untrusted = _estimate_untrusted(labels, estimate)
        held = "" if untrusted else _drop_too_small(mon.max_estimated_drop, labels, estimate)
        if held:
            return MonitorDecision(
                WARN,
                [*reasons, held],
                drifted,
                **base,  # type: ignore[arg-type]
            )
        if untrusted:
            reasons.append(untrusted)
    if reasons:
        return MonitorDecision(RETRAIN, reasons, drifted, **base)  # type: ignore[arg-type]
    if warned:
        why = []
        for k in warned:
            f = sig.features.get(k) if sig else None
            if k in waiting:
                why.append(
                    f"PSI {k} {finite[k]:.3f} >= psi_retrain and significant, but not yet in "
                    f"{mon.consecutive} windows in a row (monitoring.consecutive)"
                )
            elif k in noise and f is not None and not f.in_trigger:
                why.append(f"PSI {k} {finite[k]:.3f} >= psi_retrain, left out of the trigger")
            elif k in noise and f is not None:
                p = "n/a" if f.p_adjusted is None else f"{f.p_adjusted:.2g}"
                why.append(
                    f"PSI {k} {finite[k]:.3f} >= psi_retrain but not significant (BH-adjusted "
                    f"p {p} > fdr {mon.fdr:g}): sampling noise at {rows} rows"
                )
            else:
                why.append(f"PSI {k} {finite[k]:.3f} >= psi_warn {mon.psi_warn:g}")
        return MonitorDecision(WARN, why, warned, **base)  # type: ignore[arg-type]
    top = f"max PSI {max_psi:.3f}" if max_psi is not None else "no PSI"
    return MonitorDecision(OK, [f"{top} < psi_warn {mon.psi_warn:g}"], [], **base)  # type: ignore[arg-type]


def _drop_too_small(
    limit: float, labels: LabelCheck | None, estimate: dict[str, Any] | None
) -> str:
    """Why drift alone does not retrain (empty: the drop is large enough, or unknown)."""
    if estimate is None:
        return ""
    metric, reference = estimate["metric"], estimate["reference"]
    if labels is not None and labels.value is not None:  # labels decide over the estimate
        lower = metric in ("log_loss", "rmse", "mae")
        drop = labels.value - reference if lower else reference - labels.value
        if drop < limit:
            return (
                f"but {metric} on {labels.rows} labelled rows is {labels.value:.4f} (reference "
                f"{reference:.4f}, drop {drop:+.4f} < max_estimated_drop {limit:g}): no retrain"
            )
        return ""
    if not estimate["exceeds"]:
        return (
            f"but the label-free estimate of {metric} is {estimate['estimated']:.4f} (reference "
            f"{reference:.4f}, drop {estimate['drop']:+.4f} < max_estimated_drop {limit:g}; it "
            "assumes covariate shift): no retrain"
        )
    return ""


def _estimate_untrusted(labels: LabelCheck | None, estimate: dict[str, Any] | None) -> str:
    """Why the label-free estimate does not hold a drift retrain back (empty: it may)."""
    if estimate is None or (labels is not None and labels.value is not None):
        return ""
    sup = estimate.get("support")
    if not sup or sup["within"]:
        return ""
    return (
        f"the label-free estimate of {estimate['metric']} ({estimate['estimated']:.4f}, drop "
        f"{estimate['drop']:+.4f}) is not trusted: {sup['outside_share']:.0%} of the window's rows "
        f"lie outside the reference rows' support (max_outside_support {sup['limit']:g}), where "
        "the calibration extrapolates; drift decides"
    )
