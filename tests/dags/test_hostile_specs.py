"""A hostile spec (an alias bomb, a command as estimator) next to good ones: the DagBag still
holds every good model's DAGs and the broken-spec DAG, quickly, and nothing the spec names runs."""

import shutil
import time
from pathlib import Path

import yaml
from test_dag_integrity import ROOT, dagbag

BOMB = "lol0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)


def test_alias_bomb_and_command_spec_hide_no_good_dag(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("credit_default", "diabetes_progression"):
        shutil.copy(ROOT / "models" / f"{name}.yaml", models)
    (models / "bomb.yaml").write_text("name: bomb\ntask: classification\n" + BOMB)
    marker = tmp_path / "ran"
    evil = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    evil["name"] = "evil"
    evil["model"] = {"estimator": "os.system", "params": {"command": f"touch {marker}"}}
    (models / "evil.yaml").write_text(yaml.safe_dump(evil))

    started = time.perf_counter()
    bag = dagbag(models)
    elapsed = time.perf_counter() - started

    assert bag.import_errors == {}
    good = [f"{m}_{k}" for m in ("credit_default", "diabetes_progression")
            for k in ("retrain", "deploy", "monitor")]  # fmt: skip
    good.append("credit_default_rollout_control")  # the shipped spec rolls out
    assert sorted(bag.dag_ids) == sorted([*good, "retrainer_spec_errors"])
    doc = bag.dags["retrainer_spec_errors"].doc_md
    assert "bomb.yaml" in doc and "more than 100,000 values" in doc
    assert "evil.yaml" in doc and "'os.system' is not from an allowed module" in doc
    assert len(doc) < 5000  # nothing expanded into the UI
    assert elapsed < 20, f"parsing took {elapsed:.1f}s"
    assert not Path(marker).exists()


def test_a_spec_that_would_break_the_dag_files_or_their_docs_hides_nothing(tmp_path):
    """A duration past a timedelta's range (it raised OverflowError inside the DAG files'
    import: every model's DAGs were gone), a schedule Airflow refuses at DAG build, a key that
    closes a Markdown fence in the broken-spec DAG's doc, and a two-line description (it turned
    the retrain DAG's doc into one code block)."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "diabetes_progression.yaml", models)
    base = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    long = dict(base, name="long_cooldown")
    long["monitoring"] = dict(base["monitoring"], cooldown="99999999999999999999w")
    tuesday = dict(base, name="every_tuesday")
    tuesday["monitoring"] = dict(base["monitoring"], schedule="every tuesday")
    fence = dict(base, name="fence")
    fence["data"] = dict(base["data"], **{"x\n```\n## Broken spec fixed: approved\n```": 1})
    described = dict(base, description="First line of the description.\nSecond line.")
    for spec in (long, tuesday, fence, described):
        (models / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))

    bag = dagbag(models)

    assert bag.import_errors == {}
    assert {"diabetes_progression_retrain", "credit_default_retrain"} <= set(bag.dag_ids)
    doc = bag.dags["retrainer_spec_errors"].doc_md
    assert "long_cooldown.yaml" in doc and "at most 520w (ten years)" in doc
    assert "every_tuesday.yaml" in doc and "monitoring.schedule: not a cron expression" in doc
    assert "fence.yaml" in doc
    assert str(models) not in doc  # the server's folder is not shown in the UI
    # every line of an error is indented code: no heading of its own
    assert not any(line.startswith("#") for line in doc.splitlines()[1:])
    retrain = bag.dags["credit_default_retrain"].doc_md
    assert retrain.startswith("### Retrain `credit_default`\nFirst line of the description.\n")
    assert "\nSecond line.\n\nSpec: `" in retrain  # the template is not left indented
