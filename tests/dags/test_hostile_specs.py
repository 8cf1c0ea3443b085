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
