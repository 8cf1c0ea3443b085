"""Airflow plugin entry (retrainer): task links to MLflow and the Models page; logic in src/."""

from retrainer.orchestration.plugin import RetrainerPlugin

__all__ = ["RetrainerPlugin"]
