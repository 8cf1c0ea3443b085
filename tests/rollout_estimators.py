"""A challenger with faults, for the rollout tests: a real scikit-learn estimator that serving
loads through skops like any other (its package is trusted as the estimator's own).

`FaultyClassifier` is a HistGradientBoostingClassifier that raises on rows far outside the
training data (any scaled feature beyond `raise_above` standard deviations: never in training or
evaluation) and sleeps `delay` seconds in each predict call.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier


class FaultyClassifier(ClassifierMixin, BaseEstimator):
    def __init__(
        self,
        raise_above: float = 50.0,
        delay: float = 0.0,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        random_state: int = 42,
        hang_above: float = 0.0,
    ) -> None:
        self.raise_above = raise_above
        self.hang_above = hang_above  # a value beyond this: predict hangs (a minute)
        self.delay = delay
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> FaultyClassifier:
        self.inner_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            random_state=self.random_state,
        ).fit(X, y)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, X: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        values = np.asarray(X, dtype=float)
        if self.hang_above and np.any(np.abs(np.nan_to_num(values)) > self.hang_above):
            time.sleep(60)
        if np.any(np.abs(np.nan_to_num(values)) > self.raise_above):
            raise RuntimeError(f"challenger fault: a value beyond {self.raise_above} sd")
        return self.inner_.predict_proba(X)

    def predict(self, X: Any) -> Any:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class BlindClassifier(ClassifierMixin, BaseEstimator):
    """A HistGradientBoostingClassifier trained and used without some features (their columns
    of the preprocessed matrix set to 0): a challenger that predicts differently where those
    features matter, with the champion's signature (so serving scores it on the same requests)."""

    def __init__(self, blind: tuple[int, ...] = (0, 4, 7), random_state: int = 42) -> None:
        self.blind = blind
        self.random_state = random_state

    def _blinded(self, X: Any) -> Any:
        values = np.array(X, dtype=float, copy=True)
        values[:, list(self.blind)] = 0.0
        return values

    def fit(self, X: Any, y: Any) -> BlindClassifier:
        self.inner_ = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, random_state=self.random_state
        ).fit(self._blinded(X), y)
        self.classes_ = self.inner_.classes_
        return self

    def predict_proba(self, X: Any) -> Any:
        return self.inner_.predict_proba(self._blinded(X))

    def predict(self, X: Any) -> Any:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
