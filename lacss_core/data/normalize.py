"""Per-image intensity normalisation (SPEC 11), computed over all pixels and channels together."""

from __future__ import annotations

import numpy as np

METHODS = ("percentile", "range", "standard")
#: The default method, in training (``LacssDataset``) and prediction (``predict_instances``).
DEFAULT_METHOD = "percentile"
#: Percentiles mapped to 0 and 1 by ``"percentile"`` (cellpose's and stardist's defaults: robust
#: to hot pixels, saturated debris and a few very bright cells).
PERCENTILES = (1.0, 99.8)


def normalize_image(image, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Normalise one image over all its pixels and channels at once.

    Args:
        image: ``(H, W, C)`` (or any shape) numeric array of raw intensities.
        method: ``"percentile"`` maps the 1st and 99.8th percentiles (``PERCENTILES``) to 0 and 1,
            without clipping, so a few outlier pixels (hot pixels, debris) do not squash the cells
            into a narrow range; if those percentiles are equal (an image whose pixels are nearly
            all one value), it falls back to ``"range"``. ``"range"`` maps ``[min, max]`` to
            ``[0, 1]``; ``"standard"`` subtracts the mean and divides by the standard deviation.
            A constant image becomes zeros in every method.
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
    spread = 0.0
    if method == "percentile":
        shift, high = np.percentile(a, PERCENTILES)
        spread = high - shift
    if method == "range" or (method == "percentile" and spread <= 0):
        shift, spread = a.min(), a.max() - a.min()
    elif method == "standard":
        shift, spread = a.mean(), a.std()
    if spread == 0:  # a constant image carries no signal; zeros keep it harmless for training
        return np.zeros(a.shape, np.float32)
    return ((a - shift) / spread).astype(np.float32)
