"""The model rows: ``Lacss`` (tiny preset, auxnet on) in both data formats against the float64
layer references of ``lacss_core.oracle.network``.

One 64 x 64 image and fixed instance locations (some near the border, two padding rows): the LPN
maps, the instance patches, their origins (exact) and the boundary map. The network runs as
prediction runs it, compiled per the backend's default (``jit`` on JAX, eager on torch); compiling
the whole model with ``torch.compile`` is the compiled-prediction work's to check. The reference
is computed once per session, so the rows cost one model trace per data format.

The mixed-precision rows run the same weights under ``mixed_bfloat16`` (both backends, any device)
and ``mixed_float16`` (GPUs only: CPUs have no fast float16 convolutions, and XLA's CPU float16
path is an emulation not worth certifying) against the same float64 reference, at the 16-bit
tolerances of ``tolerances.py``; the origins stay exact (they are geometry, float32 throughout).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from lacss_core import _backend, oracle
from lacss_core.models import Lacss
from lacss_core.oracle import network

from . import harness
from . import tolerances as tol

BACKEND = _backend.current()
MODE = BACKEND.compile_mode if BACKEND.compiles_by_default else "eager"
IMAGE = np.random.default_rng(7).uniform(size=(1, 64, 64, 1)).astype("float32")
LOCATIONS = np.array(
    [[[10.0, 12.5], [31.0, 40.0], [0.0, 63.0], [60.5, 3.0], [-1.0, -1.0], [-1.0, -1.0]]],
    "float32",
)


@functools.cache
def _model(data_format: str, policy: str = "float32") -> Lacss:
    keras.utils.set_random_seed(0)  # the same weights in both data formats
    model = Lacss.from_preset("lacss_tiny", use_auxnet=True, data_format=data_format, dtype=policy)
    model.build((None, None, None, 1))
    if policy == "float32":
        network.randomise(model, seed=1)
    else:  # the float32 model's weights (float32 variables under a mixed policy)
        model.set_weights(_model(data_format).get_weights())
    return model


@functools.cache
def _reference() -> dict:
    expected = network.lacss(_model("channels_last"), IMAGE, LOCATIONS)
    expected["origins"] = oracle.patch_origins(LOCATIONS, _model("channels_last").crop_size)
    return expected


def _run(model: Lacss) -> dict:
    def forward(images, locations):
        dense = model.dense_forward(images)
        instances = model.segment_locations(dense["shared_features"], locations)
        keys = ("lpn_scores", "lpn_offsets", "boundary")
        return {**{k: dense[k] for k in keys}, **{k: instances[k] for k in ("patches", "origins")}}

    compiled = BACKEND.compile_with_variables(forward, model.variables)
    outputs = compiled(keras.ops.convert_to_tensor(IMAGE), keras.ops.convert_to_tensor(LOCATIONS))
    return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in outputs.items()}


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_lacss_forward_matches_the_layer_references(data_format):
    got = _run(_model(data_format))
    harness.assert_matches_reference(
        f"Lacss lacss_tiny {data_format}",
        got,
        _reference(),
        MODE,
        rtol=tol.MODEL_RTOL,
        atol=tol.MODEL_ATOL,
        exact=("origins",),
    )


MIXED = [
    pytest.param("mixed_bfloat16", id="mixed_bfloat16"),
    pytest.param(
        "mixed_float16",
        id="mixed_float16",
        marks=pytest.mark.skipif(
            harness.device_kind() != "gpu",
            reason="mixed_float16 rows run on GPUs only (no fast float16 convolutions on a CPU)",
        ),
    ),
]


@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_mixed_precision_forward_matches_the_float64_references(data_format, policy):
    got = _run(_model(data_format, policy))
    assert {str(v.dtype) for v in got.values()} == {"float32", "int32"}  # float32 heads
    harness.assert_matches_reference(
        f"Lacss lacss_tiny {data_format} {policy}",
        got,
        _reference(),
        MODE,
        rtol=tol.MODEL_HALF_RTOL,
        atol=tol.MODEL_HALF_ATOL,
        exact=("origins",),
    )
