"""Per-image intensity normalisation (SPEC 11), computed over all pixels and channels together."""

from __future__ import annotations

import numpy as np

METHODS = ("range", "standard")


def normalize_image(image, method: str = "range") -> np.ndarray:
    """Normalise one image over all its pixels and channels at once.

    Args:
        image: ``(H, W, C)`` (or any shape) numeric array of raw intensities.
        method: ``"range"`` maps ``[min, max]`` to ``[0, 1]``; ``"standard"`` subtracts the mean
            and divides by the standard deviation. A constant image becomes zeros in both.
    Returns:
        float32 array of the same shape.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    a = np.asarray(image, np.float64)
    if a.size == 0:
        raise ValueError("image is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError("image contains non-finite values")
    if method == "range":
        shift, spread = a.min(), a.max() - a.min()
    else:
        shift, spread = a.mean(), a.std()
    if spread == 0:  # a constant image carries no signal; zeros keep it harmless for training
        return np.zeros(a.shape, np.float32)
    return ((a - shift) / spread).astype(np.float32)
