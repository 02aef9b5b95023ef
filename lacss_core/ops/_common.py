"""Helpers shared by the ``lacss_core.ops`` modules (and the models): tensor checks, the SPEC 1
grid geometry, validity of ``-1``-padded location rows, float32 squared distances, row gathers.

Not part of the oracle mirror. Checks of Python scalars are in ``lacss_core._validation``.
"""

from __future__ import annotations

from keras import ops

EPS = 1e-7  # logs are taken of values clipped to [EPS, 1] (SPEC 1)


def clipped_log(x):
    """``log(clip(x, EPS, 1))`` (SPEC 1), elementwise."""
    return ops.log(ops.clip(x, EPS, 1.0))


def as_float32(x, name: str, ndim: int, *, last: int | None = None):
    """``x`` as a float32 tensor after checking its static rank and last axis (ValueError)."""
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    if len(x.shape) != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {tuple(x.shape)}")
    if last is not None and x.shape[-1] != last:
        raise ValueError(f"{name} must have last axis {last}, got shape {tuple(x.shape)}")
    return x


def check_same_shape(a, b, name_a: str, name_b: str, axes: int) -> None:
    """Static check that the first ``axes`` axes of two tensors agree."""
    if tuple(a.shape[:axes]) != tuple(b.shape[:axes]):
        raise ValueError(
            f"{name_a} shape {tuple(a.shape)} does not match {name_b} shape {tuple(b.shape)}"
        )


def valid_rows(locations):
    """``(B, N) bool`` from ``(B, N, 2)`` locations: a row is valid iff both coordinates are
    ``>= 0`` (SPEC 1), decided in float32."""
    return ops.all(ops.cast(locations, "float32") >= 0, axis=-1)


def grid_shape(image_shape, stride: int) -> tuple[int, int]:
    """``(h, w) = (ceil(H/s), ceil(W/s))``: the grid of one feature level (SPEC 1)."""
    height, width = image_shape
    return -(-height // stride), -(-width // stride)


def reference_points(grid: tuple[int, int], stride: int):
    """``(h, w, 2) float32`` cell reference points ``(i*s + (s-1)/2, j*s + (s-1)/2)`` in pixels."""
    h, w = grid
    centre = (stride - 1) / 2
    rows = ops.arange(h, dtype="float32") * stride + centre
    cols = ops.arange(w, dtype="float32") * stride + centre
    return ops.stack(ops.meshgrid(rows, cols, indexing="ij"), axis=-1)


def squared_distances(a, b):
    """Float32 ``dy*dy + dx*dx`` between broadcastable ``(..., 2)`` location tensors."""
    d = a - b
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]


def gather_rows(x, index):
    """``x[b, index[b, m]]``: ``x (B, N, ...)``, in-range ``index (B, M)`` -> ``(B, M, ...)``."""
    index = ops.reshape(index, (*index.shape, *([1] * (len(x.shape) - 2))))
    index = ops.broadcast_to(index, (*index.shape[:2], *x.shape[2:]))
    return ops.take_along_axis(x, index, axis=1)
