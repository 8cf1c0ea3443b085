"""The real platform for the e2e tests: shipped specs in a test's own models folder, and
`retrainer up` on free ports around a test module."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testenv import free_port

ROOT = Path(__file__).resolve().parents[2]


def shipped_spec(source: str, **updates) -> dict:
    """A shipped spec (models/<name>.yaml) with its training data made absolute and `updates`
    replacing whole sections, so that it works from a test's own models folder."""
    import yaml

    raw = yaml.safe_load((ROOT / "models" / f"{source}.yaml").read_text())
    raw["data"]["train"] = str(ROOT / raw["data"]["train"])
    raw.update(updates)
    return raw


@contextmanager
def running_platform(
    base: Path, specs: dict[str, dict], logs_on_exit: bool = False, **settings: object
) -> Iterator:
    """`retrainer up` (api-server with the plugin, dag-processor, scheduler, triggerer, MLflow,
    serving) on free ports, with `specs` (name -> spec dict) as its models and `settings`
    overriding the defaults; stopped after (printing each service's last log lines when
    `logs_on_exit`)."""
    import yaml

    from retrainer.config.settings import Settings
    from retrainer.platform import services

    (base / "models").mkdir()
    for name, raw in specs.items():
        (base / "models" / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    config = Settings(
        home=base / "state",
        models_dir=base / "models",
        airflow_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
        **settings,  # type: ignore[arg-type]
    )
    try:
        services.start(config, say=print, timeout=240)
        yield config
    finally:
        services.stop(config, say=print, timeout=10)
        if logs_on_exit:
            for name, _, _ in services.status(config):
                print(name, services.tail_log(config, name, 5))


def champion(settings, model: str) -> str | None:
    from retrainer.stores.registry import version_by_alias
    from retrainer.stores.tracking import mlflow_client

    mv = version_by_alias(mlflow_client(settings), model, "champion")
    return None if mv is None else str(mv.version)
