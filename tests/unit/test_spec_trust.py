"""Specs are a trust boundary: what a spec may name, and YAML that cannot exhaust the loader."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.core.training import check_estimator, load_estimator_class, make_estimator
from retrainer.errors import SpecError
from retrainer.spec import (
    allowed_estimator_modules,
    iter_specs,
    load_spec,
    parse_spec,
    short_repr,
)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

BOMB = "lol0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)  # 10**10 values once expanded, 90 aliases, 1 KB


def base() -> dict:
    return yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())


def write_spec(folder: Path, raw: dict, name: str | None = None) -> Path:
    raw = dict(raw, name=name or raw["name"])
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def command_spec(marker: Path) -> dict:
    raw = base()
    raw["name"] = "evil"
    raw["model"] = {"estimator": "os.system", "params": {"command": f"touch {marker}"}}
    return raw


# --- model.estimator -------------------------------------------------------------------------


def test_os_system_is_refused_everywhere_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    models = tmp_path / "models"
    models.mkdir()
    path = write_spec(models, command_spec(marker))
    with pytest.raises(SpecError, match="'os.system' is not from an allowed module"):
        load_spec(path)
    assert isinstance(dict(iter_specs(models))[path], SpecError)
    # Even a spec object that skipped parsing (model_construct) is refused before any call.
    raw = command_spec(marker)
    unchecked = parse_spec(base()).model_copy(
        update={"model": parse_spec(base()).model.model_construct(**raw["model"])}
    )
    for _attempt in range(2):  # a retry is refused the same way
        with pytest.raises(SpecError, match="not from an allowed module"):
            make_estimator(unchecked)
        with pytest.raises(SpecError, match="not from an allowed module"):
            check_estimator(unchecked)
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(models))
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    result = runner.invoke(app, ["specs", "check"])
    assert result.exit_code == 1 and "not from an allowed module" in result.output
    assert not marker.exists(), "the spec's command ran"


def test_estimator_outside_the_allowlist_is_refused_with_the_setting_to_change():
    raw = base()
    raw["model"]["estimator"] = "subprocess.Popen"
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "models/credit_default.yaml")
    message = str(exc.value)
    assert "models/credit_default.yaml" in message and "model.estimator" in message
    assert "['sklearn']" in message and "RETRAINER_ESTIMATOR_MODULES" in message


def test_allowlist_setting_admits_other_packages_by_string_only(monkeypatch):
    raw = base()
    raw["model"] = {"estimator": "xgboost.XGBClassifier", "params": {"n_estimators": 10}}
    with pytest.raises(SpecError, match="not from an allowed module"):
        parse_spec(raw)
    monkeypatch.setenv("RETRAINER_ESTIMATOR_MODULES", " xgboost , lightgbm")
    assert allowed_estimator_modules() == ("sklearn", "xgboost", "lightgbm")
    spec = parse_spec(raw)  # parse does not import the package
    assert spec.model.estimator == "xgboost.XGBClassifier"
    # A lookalike package name is not a submodule of an allowed one.
    raw["model"]["estimator"] = "xgboost_evil.XGBClassifier"
    with pytest.raises(SpecError, match="not from an allowed module"):
        parse_spec(raw)
    monkeypatch.setenv("RETRAINER_ESTIMATOR_MODULES", "xgboost; rm -rf /")
    with pytest.raises(SpecError, match="RETRAINER_ESTIMATOR_MODULES: expected comma-separated"):
        allowed_estimator_modules()


def test_parsing_a_spec_imports_no_estimator_package():
    code = (
        "import sys\n"
        "from retrainer.spec import load_spec\n"
        f"load_spec({str(ROOT / 'models' / 'credit_default.yaml')!r})\n"
        "print(sorted(m for m in ('sklearn', 'numpy', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("sklearn.base.defaultdict", "is collections.defaultdict, defined outside"),
        ("sklearn.base.clone", "is a function, not a class"),
        (
            "sklearn.preprocessing.StandardScaler",
            "lacks the scikit-learn estimator API (no predict)",
        ),
        ("sklearn.ensemble.NoSuchModel", "cannot import 'sklearn.ensemble.NoSuchModel'"),
        ("sklearn.base._fit_context", "is private"),
    ],
)
def test_estimator_class_is_imported_and_checked_without_being_called(estimator, expected):
    with pytest.raises(SpecError, match="model.estimator") as exc:
        load_estimator_class(estimator)
    assert expected in str(exc.value)


def test_unknown_estimator_params_are_named_before_training():
    raw = base()
    raw["model"]["params"] = {"max_iterr": 10}
    with pytest.raises(SpecError) as exc:
        check_estimator(parse_spec(raw))
    assert "model.params" in str(exc.value) and "['max_iterr']" in str(exc.value)
    assert "max_iter" in str(exc.value)  # what it accepts
    assert check_estimator(parse_spec(base())).__name__ == "HistGradientBoostingClassifier"


# --- YAML limits -----------------------------------------------------------------------------


def test_alias_bomb_is_refused_fast_with_a_clear_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\ntask: classification\n" + BOMB)
    started = time.perf_counter()
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert time.perf_counter() - started < 0.5
    message = str(exc.value)
    assert "bomb.yaml: refused: the YAML holds more than 100,000 values" in message
    assert "alias" in message and len(message) < 300


def test_too_many_aliases_are_refused(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("x: &x 1\nys: [" + ", ".join(["*x"] * 101) + "]\n")
    with pytest.raises(SpecError, match="more than 100 YAML aliases"):
        load_spec(path)


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("x: &x [1, *x]\n")
    with pytest.raises(SpecError, match="refers to a value that contains it"):
        load_spec(path)


def test_deep_nesting_is_refused_fast(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    started = time.perf_counter()
    with pytest.raises(SpecError, match="nested more than 32 levels"):
        load_spec(path)
    assert time.perf_counter() - started < 0.5


def test_oversized_and_binary_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\ndescription: " + "x" * 300_000 + "\n")
    with pytest.raises(SpecError, match="larger than 256 KiB"):
        load_spec(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_spec(binary)


def test_error_messages_never_expand_shared_values():
    # A value that shares itself 30 levels deep: 2**30 leaves if repr() expanded it.
    shared: list = ["x"]
    for _ in range(30):
        shared = [shared, shared]
    raw = base()
    raw["task"] = shared
    raw["data"]["bogus"] = shared
    started = time.perf_counter()
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "f.yaml")
    assert time.perf_counter() - started < 0.5
    message = str(exc.value)
    assert "data.bogus: unknown key (found [[[[" in message and len(message) < 600
    assert len(short_repr(shared)) == 80 and short_repr(shared).endswith("...")
    assert short_repr({"a": 1}) == "{'a': 1}"


def test_alias_bomb_next_to_good_specs_hides_nothing(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "credit_default.yaml", models)
    (models / "bomb.yaml").write_text("name: bomb\n" + BOMB)
    started = time.perf_counter()
    results = dict(iter_specs(models))
    assert time.perf_counter() - started < 1.0
    assert results[models / "credit_default.yaml"].name == "credit_default"  # type: ignore[union-attr]
    assert isinstance(results[models / "bomb.yaml"], SpecError)


def test_a_team_models_retrain_reads_only_its_own_data(tmp_path, monkeypatch):
    """Multi-team mode shares the workers: a team member who may trigger this retrain cannot
    point data_path at another team's files (nothing is read, no run is made)."""
    from retrainer.config.settings import RunContext
    from retrainer.errors import SpecError
    from retrainer.spec import load_spec, parse_spec
    from retrainer.steps.retrain import validate_data

    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    raw = load_spec(ROOT / "models" / "credit_default.yaml").model_dump()
    raw["access_control"] = {"team": "credit"}
    raw["data"]["train"] = str(tmp_path / "credit" / "batches")
    spec = parse_spec(raw)
    ctx = RunContext(dag_id="credit_default_retrain", run_id="r1")
    for elsewhere in (
        "/tmp/other-team/secret.csv",
        str(tmp_path / "credit" / "batches" / ".." / ".." / "x.csv"),
    ):
        with pytest.raises(SpecError, match="outside credit_default's data.train"):
            validate_data(spec, ctx, elsewhere)
