"""``predict_instances(compile=True)`` on PyTorch: ``torch.compile``d stages give the eager
labels and compile once per bucket and slot count, not once per image (``docs/performance.md``,
"Size buckets and compiled prediction"). JAX compiles by default: ``test_buckets.py`` counts its
traces."""

import numpy as np
import pytest
from test_predict import MarkerModel, marker_image

from lacss_core import _backend
from lacss_core._network import bucket_shape
from lacss_core.predict import predict_instances

BACKEND = _backend.current()
pytestmark = [
    pytest.mark.skipif(BACKEND.name != "torch", reason="torch.compile"),
    pytest.mark.skipif(
        not BACKEND.compile_available(), reason="torch.compile needs a C++ compiler"
    ),
]


def test_images_of_one_bucket_compile_once_and_match_eager():
    import torch
    from torch._dynamo.utils import counters

    shapes = [(97, 100), (110, 99), (128, 97)]
    assert len({bucket_shape(s) for s in shapes}) == 1
    # three markers each: the same slot count, so the second and third image compile nothing
    images = [marker_image(s, [(10, 10, 0.9), (50, 60, 0.8), (90, 90, 0.7)]) for s in shapes]
    model = MarkerModel()
    kwargs = {"normalize": None, "tile_size": 256}
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for image in images:
        compiled, _ = predict_instances(model, image, compile=True, **kwargs)
        eager, _ = predict_instances(model, image, compile=False, **kwargs)
        np.testing.assert_array_equal(compiled, eager)
        assert compiled.max() == 3
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1:] == [graphs[0]] * 2, graphs
