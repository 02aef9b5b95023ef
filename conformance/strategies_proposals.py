"""Hypothesis strategies for the LPN (SPEC 3-4) and proposal (SPEC 5-6) conformance tests.

Shapes are fixed by the caller (a few per test) so that ``jax.jit`` sees few distinct input
shapes. Coordinates live on a quarter-pixel lattice and scores on a coarse grid: every squared
distance is exact in float32 (no decision sits a rounding error from its threshold, as SPEC 1
asks of fixtures) while distance and score ties stay frequent, which is where the tie rules bite.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

PAD = -1.0


def _lattice(shape, high: float, step: float = 0.25):
    """float32 arrays of ``shape`` with values ``step * n`` in ``[0, high]``."""
    return hnp.arrays(np.int32, shape, elements=st.integers(0, int(high / step))).map(
        lambda a: (a * step).astype(np.float32)
    )


@st.composite
def padded_locations(draw, batch: int, rows: int, image_shape: tuple[int, int]):
    """``(batch, rows, 2) float32`` LOIs inside the image, some rows replaced by padding.

    Padding rows are ``(-1, -1)`` or half-negative (``(-1, y)``, ``(x, -1)``), also invalid.
    """
    height, width = image_shape
    ys = draw(_lattice((batch, rows), height - 1))
    xs = draw(_lattice((batch, rows), width - 1))
    locations = np.stack([ys, xs], axis=-1)
    pad = draw(hnp.arrays(np.int8, (batch, rows), elements=st.integers(0, 5)))
    locations[pad == 1] = PAD
    locations[pad == 2, 0] = PAD
    return locations


@st.composite
def grid_predictions(draw, batch: int, grid: tuple[int, int]):
    """``scores (B, h, w)`` on a 1/8 grid (ties likely) and ``offsets (B, h, w, 2)`` in [-2, 2]."""
    scores = draw(_lattice((batch, *grid), 1.0, step=0.125))
    offsets = draw(_lattice((batch, *grid, 2), 4.0, step=1 / 16)) - np.float32(2)
    return scores, offsets


@st.composite
def lpn_loss_inputs(draw, batch: int, grid: tuple[int, int], delta: float = 1.0):
    """``(scores, offsets, score_target, offset_target)`` for ``lpn_loss``, float32.

    Scores stay in ``[1/64, 63/64]`` and residuals at least 0.01 from ``+-delta``, so neither the
    log clip nor the Huber switch lies within a finite-difference step of any input.
    """
    shape = (batch, *grid)
    unit = st.floats(0.015625, 0.984375, width=32)  # 1/64 and 63/64, exact
    scores = draw(hnp.arrays(np.float32, shape, elements=unit))
    score_target = draw(hnp.arrays(np.bool_, shape)).astype(np.float32)
    offset_target = draw(hnp.arrays(np.float32, (*shape, 2), elements=st.floats(-2, 2, width=32)))
    residual = draw(hnp.arrays(np.float32, (*shape, 2), elements=st.floats(-3, 3, width=32)))
    near_switch = np.abs(np.abs(residual) - delta) < 0.01
    residual = np.where(near_switch, residual * 1.05, residual).astype(np.float32)
    return scores, offset_target + residual, score_target, offset_target


@st.composite
def nms_candidates(draw, batch: int, count: int, extent: float = 24.0):
    """``locations (B, K, 2)`` on the quarter-pixel lattice and ``scores (B, K)`` on a 1/8 grid."""
    locations = draw(_lattice((batch, count, 2), extent))
    scores = draw(_lattice((batch, count), 1.0, step=0.125))
    return locations, scores


nms_settings = st.fixed_dictionaries(
    dict(
        max_output=st.sampled_from([4, 16]),
        nms_distance=st.sampled_from([0.0, 2.0, 5.0]),
        min_score=st.sampled_from([0.0, 0.375]),
        pre_nms_topk=st.sampled_from([8, 4096]),
    )
)
