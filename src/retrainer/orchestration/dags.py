"""Specs -> DAGs: the composition root that the three DAG files call.

One DAG file per kind keeps each file's parse short: `build_dags(kind)` imports only that
kind's module. A broken spec never hides the other models' DAGs: it becomes the
`retrainer_spec_errors` DAG (carried by the retrain file, so it exists exactly once), or in
multi-team mode `retrainer_spec_errors_<team>` in the bundle of the team the file names, so that
one team's broken file is not shown to the others.
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from retrainer.config.settings import get_settings
from retrainer.errors import SpecError
from retrainer.orchestration.common import START
from retrainer.orchestration.teams import KINDS, spec_errors_dag_id
from retrainer.spec import iter_specs


def spec_errors_dag(errors: list[tuple[Path, Exception]], team: str | None = None) -> DAG:
    """Broken specs made visible in the Airflow UI, without hiding the other models' DAGs."""

    # indented, not fenced: no text in an error (a key holding ``` and a newline) can end it
    def shown(path: Path, err: Exception) -> str:
        # the models folder's place on the server is nobody's business in the UI
        return str(err).replace(str(path.parent) + "/", "")

    listing = "\n\n".join(
        f"**{path.name}**\n\n" + textwrap.indent(shown(path, err), "    ", lambda _: True)
        for path, err in errors
    )
    names = ", ".join(p.name for p, _ in errors)
    with DAG(
        dag_id=spec_errors_dag_id(team),
        description=f"{len(errors)} broken model spec(s): {names}. Fix them; other models are unaffected.",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["retrainer", "broken-spec"],
        doc_md=f"### Broken model specs\nThese files were skipped; their DAGs do not exist until fixed. "
        f"Run `retrainer specs check` to see the same.\n\n{listing}",
    ) as dag:

        @task
        def report_spec_errors() -> None:
            raise AirflowFailException("\n\n".join(shown(p, e) for p, e in errors))

        report_spec_errors()
    return dag


def multi_team() -> bool:
    from airflow.configuration import conf

    return conf.getboolean("core", "multi_team", fallback=False)


def build_dags(
    kind: str = "retrain", models_dir: str | Path | None = None, team: str | None = None
) -> dict[str, DAG]:
    """Every valid spec's DAG of one kind. In multi-team mode a bundle holds one team's models:
    `team`'s, or (the default bundle, team None) those without a team; otherwise all of them."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {sorted(KINDS)}; found {kind!r}")
    module = importlib.import_module(f"retrainer.orchestration.{kind}")
    builder = getattr(module, f"{kind}_dag")
    extra = getattr(module, f"{kind}_extra_dags", None)  # e.g. deploy: the rollout control
    root = Path(models_dir) if models_dir else get_settings().models_dir
    dags: dict[str, DAG] = {}
    errors: list[tuple[Path, Exception]] = []
    by_team = team is not None or multi_team()
    for path, spec in iter_specs(root):
        if by_team and spec.team != team:  # a broken spec: the team it names, if readable
            continue
        if isinstance(spec, SpecError):
            errors.append((path, spec))
            continue
        try:
            made = [builder(spec, path)] + (extra(spec) if extra is not None else [])
        except Exception as exc:  # one bad spec never hides the others
            errors.append((path, exc))
            continue
        dags.update({dag.dag_id: dag for dag in made})
    if errors and kind == "retrain":  # once per bundle
        dag = spec_errors_dag(errors, team if by_team else None)
        dags[dag.dag_id] = dag
    return dags
