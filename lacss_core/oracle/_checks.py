"""Array checks of the oracle: bad input raises ``ValueError`` naming the argument.

Checks of Python scalars (sizes, thresholds, ``crop_size``) are shared with the ops and models in
``lacss_core._validation``.
"""

from __future__ import annotations

import numpy as np

from lacss_core import _validation


def as_array(
    x, name: str, ndim: int, *, last: int | None = None, finite: bool = True
) -> np.ndarray:
    """Return ``x`` as a NumPy array after checking its rank, last axis and finiteness."""
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {a.shape}")
    if last is not None and a.shape[-1] != last:
        raise ValueError(f"{name} must have last axis {last}, got shape {a.shape}")
    if finite and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def same_batch(**arrays: np.ndarray) -> int:
    """Check that all arrays share the leading (batch) size and return it."""
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"mismatched batch sizes: {sizes}")
    return next(iter(sizes.values()))


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, axes: int) -> None:
    """Check that the first ``axes`` axes of two arrays agree."""
    if a.shape[:axes] != b.shape[:axes]:
        raise ValueError(f"{name_a} shape {a.shape} does not match {name_b} shape {b.shape}")


def valid_rows(locations: np.ndarray) -> np.ndarray:
    """``(B, N) bool``: a location row is valid iff both coordinates are >= 0 (SPEC 1)."""
    return np.all(locations >= 0, axis=-1)


def within(a: np.ndarray, name: str, low: float, high: float) -> None:
    """Check that every value of ``a`` lies in ``[low, high]``."""
    if a.size and (a.min() < low or a.max() > high):
        raise ValueError(f"{name} values must lie in [{low}, {high}], got [{a.min()}, {a.max()}]")


def integer_array(a: np.ndarray, name: str) -> np.ndarray:
    """Check that ``a`` holds integers (a label image, say) and return it."""
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a


def patch_size(patches: np.ndarray, name: str = "patches") -> int:
    """Check that the last two axes of ``patches`` are ``c x c`` with ``c`` a positive multiple of
    4 (SPEC 2) and return ``c``."""
    c = patches.shape[-1]
    if patches.shape[-2] != c or not _validation.is_crop_size(c):
        raise ValueError(
            f"{name} must end in c x c with c a positive multiple of 4, got shape {patches.shape}"
        )
    return c


def inside_rows(locations: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(B, N) bool``: the location lies in ``[0, H-1] x [0, W-1]`` on both axes (a negative,
    i.e. padded, row is not inside); compared in the locations' dtype (float32, SPEC 1)."""
    limits = np.array(shape, dtype=locations.dtype) - 1
    return valid_rows(locations) & np.all(locations <= limits, axis=-1)


def float32_locations(locations, name: str = "locations") -> np.ndarray:
    """``(B, M, 2)`` locations as float32 (the model's dtype; ``floor(y / 2)`` and validity are
    discrete decisions, SPEC 1) after checking rank, last axis and finiteness."""
    return as_array(locations, name, 3, last=2).astype(np.float32)
