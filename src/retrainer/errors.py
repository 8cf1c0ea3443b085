"""The errors retrainer raises on purpose. Each says what was wrong, where, and what to do."""

from __future__ import annotations


class RetrainerError(Exception):
    """Base class. `permanent` errors are data or configuration problems: retrying won't help."""

    permanent: bool = True


class SpecError(RetrainerError):
    """A model spec is missing, unreadable or invalid."""


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
