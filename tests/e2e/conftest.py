import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import testenv  # noqa: E402,F401  (sets the isolated environment before Airflow is imported)
