"""Teams (Airflow's multi-team mode, which the simple auth manager enforces): a model whose spec
names `access_control.team` gets its DAGs from that team's DAG bundle, and Airflow lets only the
team's users (and admins) see and act on a bundle's DAGs. The default bundle (dags/) keeps the
models without a team.

Each team's bundle is a folder of three thin DAG files under the Airflow home, written here;
`bundle_config` is Airflow's `[dag_processor] dag_bundle_config_list` for them."""

from __future__ import annotations

import json
from pathlib import Path

from retrainer.spec import iter_specs

KINDS = ("retrain", "deploy", "monitor")  # one DAG file per kind, in each bundle
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
DEFAULT_BUNDLE = "dags-folder"
DAG_FILE = '''"""Airflow DAG file (retrainer): `<model>_{kind}` of team {team}'s models (written by retrainer)."""

from retrainer.orchestration.dags import build_dags

globals().update(build_dags("{kind}", team="{team}"))
'''


SPEC_ERRORS_DAG_ID = "retrainer_spec_errors"


def spec_teams(models_dir: Path) -> list[str]:
    """The teams the specs name, sorted: a broken spec's team too, so that its error has a
    bundle to be shown in (its team's, not everyone's)."""
    return sorted({spec.team for _, spec in iter_specs(models_dir) if spec.team is not None})


def spec_errors_dag_id(team: str | None) -> str:
    """The DAG that shows the broken specs of `team` (None: those without a readable team)."""
    return SPEC_ERRORS_DAG_ID if team is None else f"{SPEC_ERRORS_DAG_ID}_{team}"


def bundle_name(team: str) -> str:
    return f"team-{team}"


def bundle_config(teams: list[str], bundles_root: Path) -> list[dict[str, object]]:
    """The default bundle (dags/: models without a team) and one bundle per team."""
    default: dict[str, object] = {"name": DEFAULT_BUNDLE, "classpath": LOCAL_BUNDLE, "kwargs": {}}
    return [default] + [
        {
            "name": bundle_name(team),
            "classpath": LOCAL_BUNDLE,
            "kwargs": {"path": str(bundles_root / team)},
            "team_name": team,
        }
        for team in teams
    ]


def team_environment(teams: list[str], bundles_root: Path) -> dict[str, str]:
    """Airflow's settings for multi-team mode with these teams; none without a team."""
    if not teams:
        return {}
    return {
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            bundle_config(teams, bundles_root)
        ),
    }


def write_team_bundles(teams: list[str], bundles_root: Path) -> None:
    """Each team's bundle folder with its three DAG files (rewritten only when they differ)."""
    for team in teams:
        folder = bundles_root / team
        folder.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            path, text = folder / f"{kind}.py", DAG_FILE.format(kind=kind, team=team)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
