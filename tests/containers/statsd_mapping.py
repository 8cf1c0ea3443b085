"""infra/prometheus/statsd-mapping.yml applied to StatsD lines as prom/statsd-exporter's glob
mapper applies it (the exporter itself is not packaged for Debian nor on PyPI, so it cannot run
here): a rule's `*` matches one dot-separated component, `$n` in the name and labels is the
n-th match, rules are tried in order and the first match wins, `action: drop` drops the line,
an unmatched name becomes the name with every character outside [a-zA-Z0-9_] replaced by `_`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    kind: str  # c (counter), g (gauge), ms / h / d (observer)


def load_rules(path: Path) -> list[dict]:
    rules = yaml.safe_load(path.read_text())["mappings"]
    for rule in rules:
        parts = rule["match"].split(".")
        rule["_re"] = re.compile(
            r"^" + r"\.".join(r"([^.]*)" if p == "*" else re.escape(p) for p in parts) + r"$"
        )
    return rules


def _expand(template: str, groups: tuple[str, ...]) -> str:
    return re.sub(r"\$\{?(\d+)\}?", lambda m: groups[int(m.group(1)) - 1], template)


def map_line(line: str, rules: list[dict]) -> Sample | None:
    """One StatsD line (`name:value|type[|@rate][|#tags]`); None if dropped or malformed."""
    metric, sep, rest = line.partition(":")
    if not sep or "|" not in rest:
        return None
    kind = rest.split("|")[1]
    for rule in rules:
        m = rule["_re"].match(metric)
        if m is None:
            continue
        if rule.get("action") == "drop":
            return None
        groups = m.groups()
        labels = tuple(
            sorted((k, _expand(str(v), groups)) for k, v in (rule.get("labels") or {}).items())
        )
        return Sample(_expand(rule["name"], groups), labels, kind)
    return Sample(re.sub(r"[^a-zA-Z0-9_]", "_", metric), (), kind)
