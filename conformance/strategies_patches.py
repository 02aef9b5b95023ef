"""Hypothesis strategies for the patch, segmentation-loss and label conformance tests.

Shapes come from a small fixed set (``SHAPES``) so that compiled functions see few distinct
shapes; the values inside are drawn from a seeded NumPy generator. Every array is float32 (or
int32), so the oracle and the backend see the same numbers, and locations are multiples of 1/4
inside the image (SPEC 1), with some rows on the border and some padded with -1.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

# (batch, instances, H, W, crop size c)
SHAPES = ((1, 3, 12, 12, 8), (2, 4, 13, 10, 8), (1, 2, 7, 9, 4), (1, 3, 16, 16, 12))
# Small shapes for the gradient tests (finite differences cost 2 oracle calls per patch pixel).
GRAD_SHAPES = ((1, 3, 12, 12, 8), (2, 2, 9, 11, 8))


def _locations(rng, batch, n, h, w):
    """``(B, N, 2) float32`` quarter-pixel LOIs inside ``h x w``: some on the border, 1/4 padded."""
    ys = rng.integers(0, 4 * (h - 1) + 1, (batch, n)) / 4
    xs = rng.integers(0, 4 * (w - 1) + 1, (batch, n)) / 4
    on_border = rng.random((batch, n)) < 0.2
    ys[on_border] = rng.choice([0, h - 1], on_border.sum())
    xs[on_border] = rng.choice([0, w - 1], on_border.sum())
    locations = np.stack([ys, xs], axis=-1)
    locations[rng.random((batch, n)) < 0.25] = -1
    return locations.astype(np.float32)


@st.composite
def scenes(draw, shapes=SHAPES):
    """``(rng, locations, (B, N, H, W, c))``: a seeded generator for the rest of the inputs."""
    batch, n, h, w, c = draw(st.sampled_from(shapes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, _locations(rng, batch, n, h, w), (batch, n, h, w, c)


@st.composite
def feature_inputs(draw):
    """``(features (B, Hf, Wf, 3), locations, c)``; ``Hf = ceil(H/2)`` or one more cell."""
    rng, locations, (batch, _, h, w, c) = draw(scenes())
    hf, wf = (h + 1) // 2 + draw(st.integers(0, 1)), (w + 1) // 2
    features = rng.normal(size=(batch, hf, wf, 3)).astype(np.float32)
    return features, locations, c


@st.composite
def label_inputs(draw):
    """``(label (B, H, W) int32 with values 0..N+1, locations, c)``."""
    rng, locations, (batch, n, h, w, c) = draw(scenes())
    label = rng.integers(0, n + 2, (batch, h, w)).astype(np.int32)
    return label, locations, c


def probabilities(rng, shape, low=0.05, high=0.95):
    return rng.uniform(low, high, shape).astype(np.float32)


@st.composite
def loss_inputs(draw, shapes=SHAPES):
    """``(patches (B, N, c, c) in (0.05, 0.95), locations, label, mask, boundary_pred)``."""
    rng, locations, (batch, n, h, w, c) = draw(scenes(shapes))
    patches = probabilities(rng, (batch, n, c, c))
    label = rng.integers(0, n + 2, (batch, h, w)).astype(np.int32)
    mask = (rng.random((batch, h, w)) < 0.5).astype(np.float32)
    boundary_pred = probabilities(rng, (batch, h, w))
    return patches, locations, label, mask, boundary_pred


@st.composite
def render_inputs(draw):
    """``(patches, locations, scores, image_shape)``: patch values include the threshold 0.5
    itself and scores come from three values, so ties are common."""
    rng, locations, (batch, n, h, w, c) = draw(scenes())
    patches = rng.choice(np.float32([0.0, 0.3, 0.5, 0.7, 1.0]), (batch, n, c, c))
    scores = rng.choice(np.float32([0.25, 0.5, 0.75]), (batch, n))
    scores[np.any(locations < 0, axis=-1)] = -1
    return patches, locations, scores.astype(np.float32), (h, w)
