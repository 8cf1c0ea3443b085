"""retrainer: model specs in, validated, tracked, gated and registered models out (via Airflow)."""

__version__ = "0.1.0"
