"""Tiers: every test under e2e/, production/ or containers/ belongs to the slow tier."""

from pathlib import Path

import pytest

SLOW_FOLDERS = {"e2e", "production", "containers"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FOLDERS & set(Path(str(item.path)).parts):
            item.add_marker(pytest.mark.slow)
