import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

import testenv  # noqa: E402,F401  (sets the isolated environment before Airflow is imported)


@pytest.fixture(scope="session")
def airflow_db():
    """Migrated Airflow and MLflow stores in the session's state folder (once per session)."""
    from retrainer import services

    services.init_state(testenv.SETTINGS, say=print)
    return testenv.SETTINGS
