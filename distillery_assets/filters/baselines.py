"""The baselines every filter's results table carries, on the same test split as the trained scorer:

* ``mean``  predicts the training split's per-dimension mean for every document (what a scorer must beat
  to have learned anything);
* ``ridge`` a ridge regression on the frozen sentence embeddings (scikit-learn), its alpha chosen by
  validation MAE; a linear probe the trained head should match or beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class MeanPredictor:
    mean: np.ndarray

    @classmethod
    def fit(cls, y_train: Any) -> MeanPredictor:
        y = np.asarray(y_train, dtype=np.float64)
        if y.ndim != 2 or not len(y):
            raise ValueError(f"mean predictor needs a non-empty (n, dims) matrix, got {y.shape}")
        return cls(y.mean(axis=0))

    def predict(self, n_or_x: Any) -> np.ndarray:
        n = n_or_x if isinstance(n_or_x, int) else len(n_or_x)
        return np.tile(self.mean, (n, 1))


@dataclass
class RidgeBaseline:
    model: Any
    alpha: float
    val_mae_by_alpha: dict[float, float] = field(default_factory=dict)
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def fit(cls, x_train: Any, y_train: Any, x_val: Any = None, y_val: Any = None, *,
            alphas: Sequence[float] = RIDGE_ALPHAS, clip: tuple[float, float] | None = None) -> RidgeBaseline:
        """Fit one ridge per alpha on train, keep the best by validation MAE (the first alpha without a
        validation split); predictions are clipped to ``clip`` (the score scale) when given."""
        from sklearn.linear_model import Ridge

        x, y = np.asarray(x_train, dtype=np.float64), np.asarray(y_train, dtype=np.float64)
        scores: dict[float, float] = {}
        best = None
        candidates = list(alphas) if x_val is not None and len(x_val) else [alphas[min(2, len(alphas) - 1)]]
        for alpha in candidates:
            model = Ridge(alpha=float(alpha)).fit(x, y)
            if x_val is not None and len(x_val):
                pred = model.predict(np.asarray(x_val, dtype=np.float64))
                if clip:
                    pred = np.clip(pred, *clip)
                scores[float(alpha)] = float(np.mean(np.abs(pred - np.asarray(y_val, dtype=np.float64))))
                if best is None or scores[float(alpha)] < scores[best[0]]:
                    best = (float(alpha), model)
            else:
                best = (float(alpha), model)
        assert best is not None
        lo, hi = clip if clip else (None, None)
        return cls(best[1], best[0], scores, lo, hi)

    def predict(self, x: Any) -> np.ndarray:
        pred = np.asarray(self.model.predict(np.asarray(x, dtype=np.float64)))
        if pred.ndim == 1:
            pred = pred[:, None]
        if self.lo is not None:
            pred = np.clip(pred, self.lo, self.hi)
        return pred
