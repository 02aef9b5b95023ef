"""``lacss train --weak`` warns when the model it trained segments (almost) none of its cells."""

import warnings

import numpy as np
import pytest
from blob_model import BlobModel

from lacss_core.cli.train import CollapseWarning, warn_if_collapsed
from lacss_core.data import SyntheticSlide
from lacss_core.data.samples import Sample


@pytest.fixture(scope="module")
def samples():
    slide = SyntheticSlide(128, seed=0)
    label = slide.label()
    ids = np.unique(label)[1:]
    points = np.array([np.argwhere(label == i).mean(0) for i in ids], np.float32)
    return [Sample(image=slide.image(), locations=points, mask=label > 0, name="slide")]


def test_a_model_that_finds_the_cells_gives_no_warning(samples):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        found = warn_if_collapsed(BlobModel(), samples)
    assert found >= 0.5 * len(samples[0].locations)


class EmptyPatches(BlobModel):
    """Proposes the cells but paints nothing: what a weak model collapsed to empty masks does."""

    def segment_locations(self, shared_features, locations):
        out = super().segment_locations(shared_features, locations)
        return {**out, "patches": out["patches"] * 0.0}


def test_a_model_that_finds_nothing_is_reported(samples):
    with pytest.warns(CollapseWarning, match=r"finds 0 cells .* hold \d+ points"):
        assert warn_if_collapsed(EmptyPatches(), samples) == 0
