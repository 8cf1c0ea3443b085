"""The errors retrainer raises on purpose. Each says what was wrong, where, and what to do."""

from __future__ import annotations


class RetrainerError(Exception):
    """Base class. `permanent` errors are data or configuration problems: retrying won't help."""

    permanent: bool = True


class SpecError(RetrainerError):
    """A model spec is missing, unreadable or invalid.

    `team`: the team the broken file names (`access_control.team`), when it could be read: its
    error is shown to that team only."""

    team: str | None = None


class DataError(RetrainerError):
    """Training or scoring data can't be read (missing, empty, unreadable, wrong format)."""


class DataValidationError(RetrainerError):
    """A batch failed its expectation suite; the report lists every failed expectation."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class TransientError(RetrainerError):
    """Infrastructure hiccup (network, service restart): retrying may succeed."""

    permanent = False


class ConfigError(RetrainerError):
    """The platform's configuration (environment, profile) is incomplete or unsafe."""


class ServiceError(RetrainerError):
    """A platform service (Airflow, MLflow, serving) did not start, stop or answer."""

    permanent = False


class AirflowAPIError(RetrainerError):
    """Airflow's REST API refused or failed a request."""


class SimulationError(RetrainerError):
    """The traffic simulator cannot replay (bad data file, serving unreachable)."""


class DeployError(RetrainerError):
    """Deployment failed (bad version, failed reload or smoke test): roll back, don't retry."""


class MonitorError(RetrainerError):
    """The check cannot be made (no champion profile, unreadable log): permanent, no retries."""


class NoChampion(MonitorError):
    """Nothing to compare with yet: the check is skipped, not failed."""


class VersionNotFound(RetrainerError):
    """A model version or alias the registry does not have."""


class ReproduceError(RetrainerError):
    """A version cannot be rebuilt as recorded (its snapshot is not the data it trained on)."""
