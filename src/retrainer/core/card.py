"""A model version's card, from the facts recorded about it: Markdown for people, JSON in the
Model Card Toolkit's schema (v0.0.2, vendored in `schemas/`), and Hugging Face's YAML metadata.

Pure functions on a plain dict of facts (`steps.card.gather_facts` reads them from MLflow), so a
card renders the same in a test, the CLI and the registry. The gate decision is rendered
generically: whatever fields a check or a per-slice table carries (intervals, p-values) show up.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

MCT_SCHEMA = "model_card.schema.json"  # Model Card Toolkit v2.0.0, schema v0.0.2 (Apache-2.0)
MCT_SCHEMA_VERSION = "0.0.2"
_LOWER = ("lower", "low", "ci_low", "ci_lower", "lower_bound")
_UPPER = ("upper", "high", "ci_high", "ci_upper", "upper_bound")


def mct_schema() -> dict[str, Any]:
    text = resources.files("retrainer.core").joinpath("schemas", MCT_SCHEMA).read_text()
    return dict(json.loads(text))


def validate_mct(card: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `card` breaks the Model Card Toolkit schema."""
    import jsonschema

    jsonschema.Draft7Validator(
        mct_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate(card)


# --- helpers on the facts --------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


# What could open a link, an image, raw HTML, a heading, a code span or a table cell; emphasis
# (* _ ~) is left alone: it only restyles, and names like roc_auc stay readable in the raw text
_MARKDOWN = re.compile(r"([\\`\[\]<>|!#])")


def _md(value: Any) -> str:
    """A value from the data or the run (a category, a column name, a reason quoting either) as
    inline Markdown text: the characters that open structure escaped and its line breaks made
    spaces, so it never opens a heading, a link, an image or a table cell of its own.
    The spec's own prose (card.intended_use, ...) is the author's Markdown and is not passed here."""
    return _MARKDOWN.sub(r"\\\1", _fmt(value)).replace("\r", " ").replace("\n", " ")


def _code(value: Any) -> str:
    """A value inside a code span: backticks and line breaks would end it."""
    return _fmt(value).replace("`", "'").replace("\r", " ").replace("\n", " ")


def _cell(value: Any) -> str:
    return _md(value)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    if not rows:
        return []
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def _when(ms: int | float | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(float(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _bound(check: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if check.get(name) is not None:
            return check[name]
    interval = check.get("interval") or check.get("ci") or {}
    if isinstance(interval, dict):
        for name in names:
            if interval.get(name) is not None:
                return interval[name]
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return interval[0] if names is _LOWER else interval[1]
    return None


def slice_tables(gate: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every list of records in the gate decision other than its checks (per-slice tables, ...),
    found at the top level or under `extra`."""
    found: dict[str, list[dict[str, Any]]] = {}
    for where in (gate, gate.get("extra") or {}):
        for key, value in where.items():
            if key in ("checks", "reasons", "extra"):
                continue
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                found[key] = value
            elif (
                isinstance(value, dict)
                and value
                and all(isinstance(v, dict) for v in value.values())
                and key not in ("candidate_metrics", "champion_metrics")
            ):
                found[key] = [{"name": k, **v} for k, v in value.items()]
    return found


# --- Markdown --------------------------------------------------------------------------------


def to_markdown(facts: dict[str, Any]) -> str:
    card = facts.get("card") or {}
    data = facts.get("data") or {}
    training = facts.get("training") or {}
    gate = facts.get("evaluation") or {}
    name, version = facts["model"], facts["version"]
    aliases = facts.get("aliases") or []
    out = [
        f"# Model card: {name} v{version}",
        "",
        f"{facts.get('description') or ''}".strip(),
        "",
        f"- **Status**: {', '.join(aliases) or 'registered (no alias)'}"
        f"; registered {_when(facts.get('created'))}",
        f"- **Task**: {facts.get('task')}; target `{training.get('target', '-')}`",
        f"- **Owner**: {facts.get('owner') or '-'}"
        + (f" ({card['contact']})" if card.get("contact") else ""),
    ]
    if card.get("license"):
        out.append(f"- **License**: {card['license']}")
    out += ["", "## Intended use", ""]
    out.append(card.get("intended_use") or "_Not stated in the spec (`card.intended_use`)._")
    if card.get("users"):
        out += ["", "Intended users: " + "; ".join(card["users"]) + "."]
    if card.get("out_of_scope"):
        out += ["", "Out of scope:", *[f"- {x}" for x in card["out_of_scope"]]]
    out += ["", "## Limitations", ""]
    limits = list(card.get("limitations") or [])
    out += [f"- {x}" for x in limits] or ["_None stated in the spec (`card.limitations`)._"]
    if card.get("ethical_considerations"):
        out += ["", "Ethical considerations:", *[f"- {x}" for x in card["ethical_considerations"]]]

    validation = data.get("validation") or {}
    out += [
        "",
        "## Data",
        "",
        f"- **Source**: `{_code(data.get('source', '-'))}`",
        f"- **Digest**: `{data.get('digest', '-')}`; {_fmt(data.get('rows'))} rows"
        + (f", {data['bytes'] / 1e6:.2f} MB in memory" if data.get("bytes") else "")
        + f" ({_fmt(training.get('train_rows'))} train, {_fmt(training.get('test_rows'))} test)",
        f"- **Time range**: {_md(data['time_range']) if data.get('time_range') else 'no time column (`card.time_column`)'}",
        f"- **Validation**: {_md(validation.get('summary', 'not recorded'))}",
        f"- **Snapshot**: `{_code(data.get('snapshot') or 'none recorded')}`"
        + (
            ""
            if data.get("snapshot_exists") is None
            else (" (present)" if data["snapshot_exists"] else " (**deleted**)")
        ),
        f"- **Retention**: {_md(data.get('retention') or '-')}",
    ]

    out += [
        "",
        "## Training",
        "",
        f"- **Estimator**: `{training.get('estimator', '-')}`",
        f"- **Parameters**: {_fmt(training.get('params') or {}) if training.get('params') else 'defaults'}",
        f"- **Features**: {len(training.get('numeric') or [])} numeric "
        f"({_md(training.get('numeric') or [])}); {len(training.get('categorical') or [])} "
        f"categorical ({_md(training.get('categorical') or [])})",
        f"- **Code version**: `{training.get('code_version', '-')}`",
        f"- **Lock digest**: `{training.get('lock_digest', '-')}`",
        f"- **Seeds**: {training.get('seed', '-')}",
        f"- **Why trained**: {_md(training.get('reason') or '-')}"
        + (
            f" (origin: {_md(training['trigger_origin'])})"
            if training.get("trigger_origin")
            else ""
        ),
        f"- **Run**: DAG run `{_code(training.get('dag_run_id', '-'))}`, MLflow run "
        f"`{training.get('mlflow_run_id', '-')}`",
    ]

    out += ["", "## Evaluation", ""]
    if gate:
        out.append(
            f"Gate **{gate.get('decision', '?')}** on `{gate.get('primary_metric')}` "
            f"(min improvement {_fmt(gate.get('min_improvement'))}), on the held-back test split."
        )
        out += [""] + [f"- {_md(r)}" for r in gate.get("reasons") or []]
        checks = [dict(c) for c in gate.get("checks") or []]
        if checks:
            out += ["", *_table(checks)]
        for title, rows in slice_tables(gate).items():
            out += ["", f"**{title.replace('_', ' ')}**", "", *_table(rows)]
    else:
        out.append("_No gate decision recorded._")

    out += ["", "## Comparison with the champion it replaced", ""]
    champ = gate.get("champion_metrics")
    if gate.get("champion_version") and champ:
        cand = gate.get("candidate_metrics") or {}
        rows = [
            {
                "metric": m,
                "this version": cand.get(m),
                f"v{gate['champion_version']}": champ.get(m),
                "difference": None
                if cand.get(m) is None or champ.get(m) is None
                else cand[m] - champ[m],
            }
            for m in sorted(set(cand) | set(champ))
        ]
        out += _table(rows)
    else:
        out.append("No champion when it was trained: it was the first version.")

    cost = facts.get("cost")
    recent = facts.get("recent_retrains")
    out += ["", "## Cost", ""]
    if cost:
        out.append(
            f"Training run: {cost['wall_s']} s wall, {cost['cpu_s']} s CPU, peak memory "
            f"{cost['peak_mb']} MB."
        )
        out += [
            "",
            *_table(
                [{"task": t, **v} for t, v in (cost.get("tasks") or {}).items()],
                ["task", "wall_s", "cpu_s", "peak_mb", "startup_s"],
            ),
        ]
    else:
        out.append("_No cost recorded for its training run._")
    if recent:
        out += [
            "",
            f"Retrains of {name} in the last {recent['days']} days: {recent['runs']} "
            f"({recent['registered']} registered, {recent['drift_triggered']} drift-triggered), "
            f"{recent['wall_s']} s wall and {recent['cpu_s']} s CPU in all.",
        ]

    drift = facts.get("drift") or {}
    out += ["", "## Drift while champion", ""]
    if drift.get("checks"):
        out.append(
            f"{drift['checks']} monitor checks: "
            + ", ".join(f"{k} {v}" for k, v in sorted((drift.get("decisions") or {}).items()))
            + f"; retrains triggered: {drift.get('triggered', 0)}."
        )
        if drift.get("last"):
            out += ["", *_table([drift["last"]])]
    else:
        out.append("No monitor check has compared traffic with this version yet.")

    rollout = facts.get("rollout") or []
    out += ["", "## Rollout history and approvals", ""]
    if rollout:
        out += _table(
            [
                {
                    "when": _when(e.get("time")),
                    "action": e.get("action"),
                    "from": e.get("from_version") or "-",
                    "to": e.get("to_version"),
                    "by": e.get("triggered_by"),
                    "reason": (e.get("reason") or "")[:120],
                }
                for e in rollout
            ]
        )
    else:
        out.append("Never promoted: no entry in the promotion ledger.")
    approvals = facts.get("approvals") or []
    out += [""] + (
        [f"- {_md(a)}" for a in approvals]
        or ["Approval: automatic (`deployment.approval: auto`, the gate decides)."]
    )
    out += ["", f"_Generated {_when(facts.get('generated'))} by retrainer._", ""]
    return "\n".join(out)


# --- Model Card Toolkit JSON -----------------------------------------------------------------


def _performance(gate: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for check in gate.get("checks") or []:
        entry: dict[str, Any] = {"type": str(check["metric"]), "value": _fmt(check["candidate"])}
        low, high = _bound(check, _LOWER), _bound(check, _UPPER)
        if low is not None or high is not None:
            entry["confidence_interval"] = {
                "lower_bound": _fmt(low),
                "upper_bound": _fmt(high),
            }
        out.append(entry)
    seen = {e["type"] for e in out}
    for metric, value in sorted((gate.get("candidate_metrics") or {}).items()):
        if metric not in seen:
            out.append({"type": metric, "value": _fmt(value)})
    for rows in slice_tables(gate).values():
        for row in rows:
            label = row.get("slice") or row.get("name")
            metric = row.get("metric") or gate.get("primary_metric")
            value = row.get("candidate", row.get("value"))
            if label is None or metric is None or value is None:
                continue
            entry = {"type": str(metric), "value": _fmt(value), "slice": str(label)}
            low, high = _bound(row, _LOWER), _bound(row, _UPPER)
            if low is not None or high is not None:
                entry["confidence_interval"] = {"lower_bound": _fmt(low), "upper_bound": _fmt(high)}
            out.append(entry)
    return out


def to_mct(facts: dict[str, Any]) -> dict[str, Any]:
    """The card in the Model Card Toolkit's JSON schema (v0.0.2)."""
    card = facts.get("card") or {}
    data = facts.get("data") or {}
    training = facts.get("training") or {}
    gate = facts.get("evaluation") or {}
    created = facts.get("created")
    version: dict[str, Any] = {"name": str(facts["version"])}
    if created:
        version["date"] = datetime.fromtimestamp(float(created) / 1000, UTC).date().isoformat()
    if gate.get("champion_version"):
        version["diff"] = f"replaces champion v{gate['champion_version']}; " + "; ".join(
            gate.get("reasons") or []
        )
    owner: dict[str, Any] = {"name": facts.get("owner") or "retrainer"}
    if card.get("contact"):
        owner["contact"] = card["contact"]
    details: dict[str, Any] = {
        "name": facts["model"],
        "overview": facts.get("description") or facts["model"],
        "documentation": to_markdown(facts),
        "owners": [owner],
        "version": version,
        "path": facts.get("model_uri") or f"models:/{facts['model']}/{facts['version']}",
    }
    if card.get("license"):
        details["licenses"] = [{"identifier": card["license"]}]
    features = [*(training.get("numeric") or []), *(training.get("categorical") or [])]
    datasets = [
        {
            "name": f"{facts['model']} training data {data.get('digest', '')}".strip(),
            "description": (
                f"{_fmt(data.get('rows'))} rows from {data.get('source', '-')}; digest "
                f"{data.get('digest', '-')}; snapshot {data.get('snapshot') or '-'} "
                f"({data.get('retention') or 'no retention rule'}); validation: "
                f"{(data.get('validation') or {}).get('summary', 'not recorded')}"
                + (f"; time range {data['time_range']}" if data.get("time_range") else "")
            ),
        }
    ]
    considerations: dict[str, Any] = {
        "users": [{"description": u} for u in card.get("users") or []],
        "use_cases": [{"description": u} for u in [card.get("intended_use")] if u],
        "limitations": [{"description": x} for x in card.get("limitations") or []],
        "ethical_considerations": [
            {"name": x, "mitigation_strategy": ""} for x in card.get("ethical_considerations") or []
        ],
    }
    considerations = {k: v for k, v in considerations.items() if v}
    out: dict[str, Any] = {
        "schema_version": MCT_SCHEMA_VERSION,
        "model_details": details,
        "model_parameters": {
            "model_architecture": training.get("estimator", ""),
            "data": datasets,
            "input_format": "tabular rows: " + ", ".join(features),
            "output_format": "label and class probabilities"
            if facts.get("task") == "classification"
            else "a number",
        },
        "quantitative_analysis": {"performance_metrics": _performance(gate)},
    }
    if considerations:
        out["considerations"] = considerations
    return out


# --- Hugging Face YAML metadata --------------------------------------------------------------


def to_hf_metadata(facts: dict[str, Any]) -> str:
    """The YAML block that opens a Hugging Face model card (README.md), with `model-index`."""
    import yaml

    card = facts.get("card") or {}
    data = facts.get("data") or {}
    gate = facts.get("evaluation") or {}
    task = (
        "tabular-classification" if facts.get("task") == "classification" else "tabular-regression"
    )
    dataset = {
        "type": f"{facts['model']}-training-data",
        "name": f"{facts['model']} data {data.get('digest', '')}".strip(),
        "split": "test",
    }
    metrics = [
        {"type": k, "value": float(v), "name": f"test {k}"}
        for k, v in sorted((gate.get("candidate_metrics") or {}).items())
    ]
    meta: dict[str, Any] = {
        "library_name": "sklearn",
        "pipeline_tag": task,
        "tags": ["retrainer", "tabular", str(facts.get("task"))],
        "model-index": [
            {
                "name": f"{facts['model']}-v{facts['version']}",
                "results": [
                    {
                        "task": {"type": task, "name": str(facts.get("task"))},
                        "dataset": dataset,
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }
    if card.get("license"):
        meta["license"] = (
            "other" if card["license"] == "proprietary" else str(card["license"]).lower()
        )
    return "---\n" + str(yaml.safe_dump(meta, sort_keys=False)) + "---\n"


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 980px; margin: 24px auto; padding: 0 24px; }
h1 { border-bottom: 2px solid #0969da; padding-bottom: 6px; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 22px; font-size: 18px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; font-size: 12px;
       word-break: break-all; }
ul { padding-left: 22px; margin: 6px 0; }
"""


def to_html(markdown: str, title: str) -> str:
    """The Markdown card as a standalone page (mistune, with tables)."""
    import html

    import mistune

    render = mistune.create_markdown(plugins=["table"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{render(markdown)}</body></html>"
    )
